"""Evaluate a trained GRLNet, or score new recordings.

    python test.py --checkpoint runs/RUN/checkpoints/last.pt           # its own test set again
    python test.py --model_dir models/ --test_root Test --test_label_path test_label.csv
    python test.py --checkpoint last.pt --input new_recordings/ --output scores.csv
"""
from grlnet.cli import run_cli
from main import test
from opts import parse_test_args

if __name__ == "__main__":
    run_cli(test, lambda: parse_test_args(description=__doc__))
