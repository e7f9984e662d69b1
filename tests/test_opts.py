"""Options as a user meets them: --help, and the folder a resumed run continues in."""
import train
from opts import build_parser, parse_opts


def test_help_keeps_the_examples_and_shows_each_set_default_once():
    text = build_parser(description=train.__doc__).format_help()
    assert "train_label.csv \\\n                    --test_root Test" in text  # the example's line break
    assert "(default: True)" in text and "(default True)" not in text
    assert "(default: None)" not in text
    assert text.count("default half") == 1 and "default half (default" not in text
    assert "test.py (train.py refuses these):" in text


def test_resume_from_a_run_folders_checkpoint_continues_in_that_folder(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    assert parse_opts(["--resume", str(checkpoint)]).output_dir == str(tmp_path / "run")
    assert parse_opts(["--resume", str(checkpoint), "--output_dir", str(tmp_path / "b")]).output_dir == str(
        tmp_path / "b")
    assert parse_opts(["--resume", str(tmp_path / "copied.pt")]).output_dir is None  # a new run folder
