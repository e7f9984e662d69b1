"""Options as a user meets them: --help by purpose, each script's own, lists derived from the groups,
and the folder a resumed run continues in."""
import argparse

import opts
import test as test_script
import train
from opts import OPTION_GROUPS, build_parser, group_options, parse_opts


def test_help_keeps_the_examples_and_shows_each_set_default_once():
    text = build_parser(description=train.__doc__).format_help()
    assert "train_label.csv \\\n                    --test_root Test" in text  # the example's line break
    assert "(default: True)" in text and "(default True)" not in text
    assert "(default: None)" not in text
    assert text.count("default half") == 1 and "default half (default" not in text
    assert "scoring (test.py)" not in text


def _help_options(parser: argparse.ArgumentParser) -> set[str]:
    """The options --help lists: every option string of the actions not suppressed."""
    shown = {s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
    text = parser.format_help()
    assert all(s in text for s in shown)
    return shown


def test_train_help_lists_no_test_or_release_option_and_test_help_lists_its_own():
    train_help = _help_options(build_parser(description=train.__doc__))
    test_help = _help_options(build_parser(description=test_script.__doc__, shown=opts.TEST_GROUPS))
    hidden = {f"--{name}" for name in (*opts.TEST_ONLY_OPTIONS, *group_options("release"))}
    assert "--checkpoint" in hidden and "--n_threads" in hidden
    assert not train_help & hidden and "--update" in train_help and "--score" in train_help
    assert {f"--{name}" for name in opts.TEST_ONLY_OPTIONS} <= test_help
    assert "--update" not in test_help and "--d_net_learning_rate" not in test_help and "--score" in test_help


def _options_by_heading(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    return {group.title: {action.dest for action in group._group_actions} for group in parser._action_groups}


def test_every_option_is_in_one_group_and_the_lists_are_the_groups_options():
    parser = build_parser(shown=tuple(OPTION_GROUPS))
    headings = _options_by_heading(parser)
    grouped = [set(group_options(name)) for name in OPTION_GROUPS]
    every = set(vars(parser.parse_args([]))) - {"help"}
    assert set().union(*grouped) == every and sum(map(len, grouped)) == len(every)  # one group each
    for name, group in OPTION_GROUPS.items():
        if group.title is not None:
            assert headings[group.title] == set(group_options(name)), name
    assert set(opts.TEST_ONLY_OPTIONS) == headings["scoring (test.py)"]
    assert opts.RESUME_MAY_CHANGE == set(group_options("paths", "duration", "speed", "run_folder", "release", "test"))
    paths, clips = (headings[OPTION_GROUPS[name].title] for name in ("paths", "clips"))
    assert set(opts.DATA_SET_OPTIONS) == paths | clips


def test_an_option_added_to_a_group_reaches_the_parsers_and_the_lists_derived_from_it(monkeypatch):
    paths = OPTION_GROUPS["paths"]

    def paths_and_one_more(g):
        paths.add(g)
        g.add_argument("--another_root")

    monkeypatch.setitem(OPTION_GROUPS, "paths", opts.OptionGroup(paths.title, paths_and_one_more))
    assert "another_root" in group_options("paths")
    assert "another_root" in group_options("paths", "clips")  # opts.DATA_SET_OPTIONS
    assert parse_opts(["--another_root", "x"]).another_root == "x"
    assert "--another_root" in build_parser().format_help()


def test_resume_from_a_run_folders_checkpoint_continues_in_that_folder(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    assert parse_opts(["--resume", str(checkpoint)]).output_dir == str(tmp_path / "run")
    assert parse_opts(["--resume", str(checkpoint), "--output_dir", str(tmp_path / "b")]).output_dir == str(
        tmp_path / "b")
    assert parse_opts(["--resume", str(tmp_path / "copied.pt")]).output_dir is None  # a new run folder
