"""The protocols of reproduce.py: which data sets each one trains and tests on, split how, and with
which fixed options."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data.console import UserError
from data.layouts import labelled_wav_items
from experiments.baselines.dcase_autoencoder import EPOCHS as BASELINE_EPOCHS

# Synthetic clips of 4096 samples (0.26 s): 9 mel frames, 5 stacked vectors for the baseline.
TINY_ARGS = ["--mess_length", "4096", "--segment_length", "256", "--segment_hop", "1024", "--epochs", "1",
             "--synthetic_train_clips", "4", "--synthetic_test_clips", "4"]
LITE_TRAIN_NORMAL = 2
MIMII_ROTATIONS = 5  # splits of MIMII fan id_02's ten normal clips, five training clips each
SLIDER_ROTATIONS, SLIDER_HELD_OUT = 5, 15  # splits of the slider set's 75 training clips: 15 of them test


@dataclass
class Task:
    """One data split: a name, the folder its runs go to, and the GRLNet options that select it."""

    name: str
    folder: Path
    data_args: list[str]


@dataclass
class Protocol:
    """What a protocol runs: its tasks, fixed options, default seeds and baseline epochs, and its standing."""

    summary: str
    tasks: Callable[[Path, Path], list[Task]]
    fixed_args: list[str] = field(default_factory=list)
    seeds: tuple[int, ...] = (0, 1, 2)
    baseline_epochs: int = BASELINE_EPOCHS
    standing: str = "result"


def existing(path: Path) -> Path:
    """``path`` if it is a folder, else an error that says where the data were looked for."""
    if not path.is_dir():
        raise UserError(f"{path}: data folder not found (give --data_dir, the folder holding the data sets)")
    return path


def mimii_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """MIMII fan id_02: normal 00-04 train; normal 05-09 and every abnormal clip test."""
    root = existing(data_dir / "mimii_fan_id02")
    return [Task("mimii_fan_id02", folder, ["--data_root", str(root), "--train_normal_files", "5"])]


def slider_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """DCASE 2020 slider id_00: train/ trains, test/ tests."""
    root = existing(data_dir / "dcase2020_slider_id00")
    return [Task("dcase2020_slider_id00", folder, ["--data_root", str(root)])]


def link_split(split_folder: Path, normal: list[Path], abnormal: list[Path], numbered: bool = False) -> Path:
    """A MIMII-layout folder of links: ``normal`` in normal/ and ``abnormal`` in abnormal/; ``numbered``
    puts the normal clips' position before their names, so that name order is the order given."""
    shutil.rmtree(split_folder, ignore_errors=True)
    for index, path in enumerate(normal):
        (split_folder / "normal").mkdir(parents=True, exist_ok=True)
        (split_folder / "normal" / (f"{index:02d}_" * numbered + path.name)).symlink_to(path.resolve())
    for path in abnormal:
        (split_folder / "abnormal").mkdir(parents=True, exist_ok=True)
        (split_folder / "abnormal" / path.name).symlink_to(path.resolve())
    return split_folder


def mimii_rotation_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """MIMII fan id_02 with the normal clips rotated: split r trains normal clips 2r..2r+4 (cyclically,
    name order) and tests the other five and every abnormal clip; split 0 is the mimii_fan_id02 protocol's."""
    items = labelled_wav_items(existing(data_dir / "mimii_fan_id02"))
    normal = [path for path, label in items if label == 0]
    abnormal = [path for path, label in items if label != 0]
    tasks = []
    for rotation in range(MIMII_ROTATIONS):
        order = normal[2 * rotation:] + normal[:2 * rotation]
        split = link_split(folder / f"split{rotation}" / "data", order, abnormal, numbered=True)
        tasks.append(Task(f"mimii_fan_id02_split{rotation}", folder / f"split{rotation}",
                          ["--data_root", str(split), "--train_normal_files", str(len(normal) // 2)]))
    return tasks


def slider_rotation_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """DCASE 2020 slider id_00 with more test normals: split r holds training clips 15r..15r+14 (name
    order) out of training and tests them beside test/'s clips; the other 60 train. Links in
    split<r>/data/{train,test}/, the held-out clips named normal_id_00_train_<number>.wav."""
    root = existing(data_dir / "dcase2020_slider_id00")
    train = sorted((root / "train").glob("*.wav"))
    test = sorted((root / "test").glob("*.wav"))
    tasks = []
    for rotation in range(SLIDER_ROTATIONS):
        held_out = train[SLIDER_HELD_OUT * rotation:SLIDER_HELD_OUT * (rotation + 1)]
        split = folder / f"split{rotation}" / "data"
        shutil.rmtree(split, ignore_errors=True)
        links = [(split / "train" / p.name, p) for p in train if p not in held_out]
        links += [(split / "test" / p.name, p) for p in test]
        links += [(split / "test" / p.name.replace("_id_00_", "_id_00_train_"), p) for p in held_out]
        for link, target in links:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target.resolve())
        tasks.append(Task(f"dcase2020_slider_id00_split{rotation}", folder / f"split{rotation}",
                          ["--data_root", str(split)]))
    return tasks


def lite_split(test_folder: Path, split_folder: Path) -> Path:
    """A MIMII-layout folder of links to a lite test folder's clips: normal/ and abnormal/."""
    items = labelled_wav_items(test_folder)
    normal = [path for path, label in items if label == 0]
    if len(normal) <= LITE_TRAIN_NORMAL:
        raise UserError(f"{test_folder}: {len(normal)} normal clips; the smoke split needs more than "
                        f"{LITE_TRAIN_NORMAL} (they train, the rest test)")
    return link_split(split_folder, normal, [path for path, label in items if label != 0])


def lite_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """Per machine of dcase2020_lite: two normal test clips train, the others test (links in split/)."""
    machines = sorted(p for p in existing(data_dir / "dcase2020_lite").iterdir() if (p / "test").is_dir())
    if not machines:
        raise UserError(f"{data_dir / 'dcase2020_lite'}: no <machine>/test/ folders")
    return [Task(m.name, folder / m.name,
                 ["--data_root", str(lite_split(m / "test", folder / m.name / "split")),
                  "--train_normal_files", str(LITE_TRAIN_NORMAL)]) for m in machines]


def is_data_set(path: Path) -> bool:
    """Whether ``path`` holds a WAV data set in a layout --data_root reads (DCASE or MIMII)."""
    return any(all((path / part).is_dir() for part in parts) for parts in (("train", "test"), ("normal", "abnormal")))


def folder_tasks(data_dir: Path, folder: Path) -> list[Task]:
    """``data_dir`` itself if it is a data set, else each of its sub-folders that is one, as --data_root."""
    root = existing(data_dir)
    roots = [root] if is_data_set(root) else sorted(p for p in root.iterdir() if is_data_set(p))
    if not roots:
        raise UserError(f"{root}: neither a data set nor a folder of data sets (DCASE: <name>/train/ and "
                        "<name>/test/; MIMII: <name>/normal/ and <name>/abnormal/)")
    return [Task(r.name, folder / r.name, ["--data_root", str(r)]) for r in roots]


def synthetic_task(name: str) -> Callable[[Path, Path], list[Task]]:
    """The embedded synthetic data set (no data path), as task ``name``."""
    return lambda data_dir, folder: [Task(name, folder, [])]


PROTOCOLS = {
    "mimii_fan_id02": Protocol(
        "MIMII fan id_02 (0 dB): --data_root <data_dir>/mimii_fan_id02 --train_normal_files 5, so "
        "normal 00-04 train; normal 05-09 and all 10 abnormal clips test.", mimii_tasks),
    "mimii_fan_id02_rotations": Protocol(
        f"MIMII fan id_02 (0 dB), {MIMII_ROTATIONS} splits: split r trains normal clips 2r..2r+4 (cyclically, "
        "name order; links in split<r>/data/) and tests the other five and all 10 abnormal clips; split 0 is "
        "the mimii_fan_id02 protocol's. The test set is small (AUC steps of 0.02): the splits show the spread.",
        mimii_rotation_tasks),
    "dcase2020_slider_id00": Protocol(
        "DCASE 2020 slider id_00: --data_root <data_dir>/dcase2020_slider_id00; train/ (75 normal "
        "clips) trains, test/ (3 normal, 3 anomalous) tests.", slider_tasks),
    "dcase2020_slider_id00_rotations": Protocol(
        f"DCASE 2020 slider id_00, {SLIDER_ROTATIONS} splits: split r holds training clips {SLIDER_HELD_OUT}r.."
        f"{SLIDER_HELD_OUT}r+{SLIDER_HELD_OUT - 1} (name order) out and tests them beside test/'s 3 normal and 3 "
        "anomalous clips; the rest train (links in split<r>/data/). AUC steps of 1/54 "
        "instead of 1/9.", slider_rotation_tasks),
    "folders": Protocol(
        "Your data: --data_dir DIR, a data set or a folder of them (DCASE: <name>/train/ and <name>/test/, "
        "e.g. a DCASE development set's machine types; MIMII: <name>/normal/ and <name>/abnormal/, the first "
        "half of normal/ trains); one task per data set, at the WAV preset.", folder_tasks),
    "lite_smoke": Protocol(
        "SMOKE TEST, never a result: for each <data_dir>/dcase2020_lite/<machine>/test/ (3 normal, 3 "
        "anomalous clips) two normal clips train and the rest test (links in <machine>/split/, "
        "--train_normal_files 2).", lite_tasks, standing="smoke test, never a result"),
    "demo": Protocol(
        "The embedded synthetic valve data set at the demo preset (what `python train.py` runs); with "
        "--methods grlnet_standard grlnet_fp32 on a GPU it compares bf16 + compile with fp32.",
        synthetic_task("demo")),
    "tiny": Protocol(
        "CI: the embedded synthetic data set with minimal settings (" + " ".join(TINY_ARGS) + "), one "
        "seed, baseline 2 epochs; checks the pipeline in seconds, never a result.", synthetic_task("tiny"),
        fixed_args=TINY_ARGS, seeds=(0,), baseline_epochs=2,
        standing="CI check on synthetic data, never a result"),
}
