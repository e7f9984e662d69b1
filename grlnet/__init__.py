"""GRLNet's library: training steps, scoring, metrics, checkpoints, results and figures."""
