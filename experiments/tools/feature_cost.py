"""What the feature scores add to a run: one epoch of a real run's work, timed part by part in one
process (training steps, the paper's score alone on the test clips, then fitting the feature statistics
and scoring with them), so that the parts share the machine's conditions.

    OMP_NUM_THREADS=1 python -m experiments.tools.feature_cost -- --data_root ../shared/data/mimii_fan_id02 --train_normal_files 5
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence

from grlnet.features import FeatureScorer
from grlnet.scores import PAPER_SCORE
from grlnet.scoring import fit_normal_windows, score_clips
from main import Trainer, set_up
from opts import parse_opts, scoring_settings


def timed(work: Callable[[], object]) -> tuple[float, object]:
    """Seconds ``work`` took, and what it returned."""
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_options", nargs="*", help="train.py's options, after --")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        opt = parse_opts([*args.train_options, "--quiet", "--output_dir", folder])
        run, _ = set_up(opt)
        model, device, test = run.model, run.device, run.data.test
        training, _ = timed(Trainer(run).train_epoch)
        paper_opt = argparse.Namespace(**{**vars(opt), "score": PAPER_SCORE})
        paper, _ = timed(lambda: score_clips(model, test, scoring_settings(paper_opt), device))
        fitting, models = timed(lambda: fit_normal_windows(model, run.data.train, scoring_settings(opt), device))
        with_features, _ = timed(lambda: score_clips(model, test, scoring_settings(opt), device, scorer=FeatureScorer(models)))
    epoch = training + paper
    added = fitting + with_features - paper
    print(f"training steps {training:.1f} s, scoring (paper's score) {paper:.1f} s: an epoch without feature "
          f"scores {epoch:.1f} s")
    print(f"fitting the feature statistics {fitting:.1f} s, scoring with every score {with_features:.1f} s")
    print(f"added {added:.1f} s an epoch: {100 * added / epoch:.1f} % of the epoch")


if __name__ == "__main__":
    main()
