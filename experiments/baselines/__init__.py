"""Reference methods that GRLNet is compared with, trained and scored on the same data split."""
