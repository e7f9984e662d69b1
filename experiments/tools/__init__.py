"""Command-line tools for the studies: the score rule, controls, costs, paired seeds, the architecture figure."""
