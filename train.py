"""Train GRLNet. With no data path it trains on the embedded synthetic valve data set (CPU, minutes).

    python train.py                                   # embedded demo
    python train.py --data_root ../shared/data/mimii_fan_id02
    python train.py --train_root Train --train_label_path train_label.csv \\
                    --test_root Test --test_label_path test_label.csv   # the release's CSV layout
"""
from grlnet.cli import run_cli
from main import train
from opts import parse_opts

if __name__ == "__main__":
    run_cli(train, lambda: parse_opts(description=__doc__))
