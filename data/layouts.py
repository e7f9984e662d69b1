"""Which files belong to a data set and what their labels are, for each supported layout.

An item is ``(path, label)`` with label 0 = normal, 1 = abnormal (the release's 2 and 3,
cavitation intensities, are kept and count as abnormal in the metrics).
"""
from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

from data.console import UserError
from data.signals import is_audio, is_indexed_csv

Item = tuple[Path, int]
RELEASE_LABELS = (0, 1, 2, 3)
# DCASE 2020 (normal_id_00_00000000.wav) and DCASE 2021-2024 (section_00_source_test_anomaly_0001_*.wav);
# MIMII's own files, flattened into one folder, say abnormal_id_00_* (MIMII ships them in abnormal/)
DCASE_NAME = re.compile(r"^(?:section_(?P<section>\d+)_(?P<domain>source|target)_(?:train|test)_)?"
                        r"(?P<label>normal|anomaly|abnormal)_(?:id_(?P<machine_id>\d+)_)?", re.IGNORECASE)
MIMII_FOLDERS = {"normal": 0, "abnormal": 1}


def _existing_folder(root: str | Path) -> Path:
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"{folder}: data folder not found")
    if not any(folder.iterdir()):
        raise UserError(f"{folder}: data folder is empty")
    return folder


def _label_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """A label file's stripped column names and its later rows with their line numbers.

    Read as UTF-8 with or without a BOM (Excel writes one); blank lines at the end are dropped.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            names = [name.strip() for name in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: the label file is not UTF-8 text ({err.reason} at byte "
                        f"{err.start})") from None
    except csv.Error as err:
        raise UserError(f"{path}: not a readable CSV file ({err})") from None
    while rows and _blank(rows[-1][1]):
        rows.pop()
    return names, rows


def _blank(row: list[str]) -> bool:
    """Whether a CSV row holds nothing but white space (csv.DictReader would skip it silently)."""
    return not "".join(row).strip()


def _label_value(text: str, path: Path, line: int) -> int:
    """One label, refused unless it is 0-3 written as a number (``1`` or ``1.0``)."""
    try:
        number = float(text)
    except ValueError:
        raise UserError(f"{path}, line {line}: label {text!r} is not a number") from None
    if number not in RELEASE_LABELS:
        raise UserError(f"{path}, line {line}: label {text!r} is not one of "
                        f"{', '.join(map(str, RELEASE_LABELS))}")
    return int(number)


def _column(names: list[str], name: str, path: Path) -> int | None:
    """The index of the label file's column ``name`` (None without one), refused when two have that name."""
    if names.count(name) > 1:
        raise UserError(f"{path}: {names.count(name)} columns are named {name!r}; which one labels the files "
                        "is ambiguous")
    return names.index(name) if name in names else None


def read_labels(label_path: str | Path) -> list[tuple[int, int, str | None]]:
    """The release's label file: a CSV with a ``label`` column, row i labels ``<i>.csv``, or the file its
    ``file`` column names where it has one. Returns each row's line number, label and file name (None
    without a ``file`` column)."""
    path = Path(label_path)
    if not path.is_file():
        raise UserError(f"{path}: label file not found")
    names, rows = _label_rows(path)
    column, file_column = _column(names, "label", path), _column(names, "file", path)
    if column is None:
        raise UserError(f"{path}: the label file has no 'label' column "
                        f"(columns: {', '.join(map(repr, names)) or 'none'})")
    labels = []
    for line, row in rows:
        if _blank(row):
            raise UserError(f"{path}, line {line}: blank line; row i labels <i>.csv, so a skipped row "
                            "would shift every later label onto the wrong file")
        label = _label_value(_cell(row, column), path, line)
        labels.append((line, label, None if file_column is None else Path(_cell(row, file_column)).name))
    if not labels:
        raise UserError(f"{path}: the label file holds no labels")
    return labels


def _cell(row: list[str], column: int) -> str:
    """A row's stripped value in ``column`` (empty where the row is short)."""
    return row[column].strip() if column < len(row) else ""


def _labels_by_name(rows: list[tuple[int, int, str | None]], files: list[Path], label_path: Path) -> list[int]:
    """Each of ``files``' labels from the label file's rows that name them (its ``file`` column), refusing a
    name no file has, a name two rows give, and a file no row names."""
    by_name: dict[str, int] = {}
    for line, label, name in rows:
        if name in by_name:
            raise UserError(f"{label_path}, line {line}: {name!r} is labelled twice (the 'file' column names "
                            "each file once)")
        by_name[name] = label
    present = {path.name for path in files}
    unknown = [name for name in by_name if name not in present]
    if unknown:
        raise UserError(f"{label_path}: the 'file' column names {unknown[0]!r}, which is not in "
                        f"{files[0].parent} ({len(unknown)} such names)")
    unlabelled = [path.name for path in files if path.name not in by_name]
    if unlabelled:
        raise UserError(f"{label_path}: no row labels {unlabelled[0]!r} ({len(unlabelled)} files without a label)")
    return [by_name[path.name] for path in files]


def _indexed_files(folder: Path) -> dict[int, Path]:
    """The ``<index>.csv`` files by index; two names for one index (1.csv, 01.csv) are refused."""
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if is_indexed_csv(path) and path.is_file():
            first = files.setdefault(int(path.stem), path)
            if first != path:
                raise UserError(f"{path}: same index {int(path.stem)} as {first.name} (row i of the label "
                                "file labels one <i>.csv); remove or rename one of them")
    return files


def csv_items(root: str | Path, label_path: str | Path | None) -> list[Item]:
    """The release's layout: ``<root>/0.csv, 1.csv, ...`` labelled by the rows of a label file (in order,
    or by the file names of its ``file`` column)."""
    folder = _existing_folder(root)
    files = _indexed_files(folder)
    if not files:
        raise UserError(f"{folder}: no <index>.csv files (the release's layout: 0.csv, 1.csv, ...)")
    indices = sorted(files)
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise UserError(f"{folder}: the files must be numbered 0..{len(indices) - 1}; "
                        f"missing {', '.join(f'{i}.csv' for i in missing[:5])}")
    if label_path is None:
        raise UserError(f"{folder}: the release's CSV layout needs a label file "
                        "(--train_label_path / --test_label_path)")
    rows, ordered = read_labels(label_path), [files[i] for i in indices]
    if rows[0][2] is not None:
        return list(zip(ordered, _labels_by_name(rows, ordered, Path(label_path)), strict=True))
    if len(rows) != len(indices):
        raise UserError(f"{label_path}: {len(rows)} labels for {len(indices)} files in {folder}")
    return [(path, label) for path, (_, label, _) in zip(ordered, rows, strict=True)]


def _audio_files(folder: Path) -> list[Path]:
    """The folder's audio files, in every format soundfile reads (signals.AUDIO_SUFFIXES)."""
    files = sorted(p for p in folder.iterdir() if is_audio(p))
    if not files:
        hint = " (it holds CSV files: give a label file for the release's layout)" \
            if any(path.suffix.lower() == ".csv" for path in folder.iterdir()) else ""
        raise UserError(f"{folder}: no audio files (.wav, .flac, .ogg or another format soundfile reads){hint}")
    return files


def labelled_wav_items(root: str | Path, training: bool = False) -> list[Item]:
    """A WAV folder labelled by MIMII subfolders (normal/, abnormal/) or DCASE names (anomaly_*,
    section_00_target_test_anomaly_*). In a ``training`` folder, which holds normal recordings only,
    a name without a label is normal; one that says anomaly is still refused by the caller."""
    folder = _existing_folder(root)
    subfolders = [folder / name for name in MIMII_FOLDERS if (folder / name).is_dir()]
    if subfolders:
        return [(p, MIMII_FOLDERS[sub.name]) for sub in subfolders for p in _audio_files(sub)]
    items = []
    for path in _audio_files(folder):
        match = DCASE_NAME.match(path.name)
        if match is None and not training:
            raise UserError(f"{path}: cannot tell its label; name test files normal_*.wav or anomaly_*.wav "
                            "(DCASE 2020), section_00_source_test_normal_*.wav or ..._anomaly_*.wav "
                            "(DCASE 2021-2024), or put them in normal/ and abnormal/ (MIMII)")
        items.append((path, 0 if match is None or match["label"].lower() == "normal" else 1))
    return items


def _dcase_matches(names: Sequence[str], field: str) -> list[re.Match] | None:
    """Each name's DCASE name fields when every name has ``field``, else None."""
    matches = [DCASE_NAME.match(Path(name).name) for name in names]
    if not matches or any(match is None or match[field] is None for match in matches):
        return None
    return matches


def dcase_sections(names: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """Each file's section ("00") and domain ("source", "target") when all have DCASE 2021-2024 names."""
    matches = _dcase_matches(names, "section")
    if matches is None:
        return None
    return [m["section"] for m in matches], [m["domain"].lower() for m in matches]


def dcase_machine_ids(names: Sequence[str]) -> list[str] | None:
    """Each file's machine id ("00") when all have DCASE 2020 names (normal_id_00_*.wav), else None."""
    matches = _dcase_matches(names, "machine_id")
    return None if matches is None else [m["machine_id"] for m in matches]


def split_data_root(root: str | Path, train_normal_files: int | None) -> tuple[list[Item], list[Item]]:
    """Split a WAV data set into training (normal only) and test items.

    DCASE 2020 layout: ``train/`` trains, ``test/`` tests. MIMII layout: the first N normal clips
    in name order train (default half of them); the other normal clips and all abnormal clips test.
    """
    folder = _existing_folder(root)
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        if train_normal_files is not None:
            raise UserError(f"{folder}: --train_normal_files splits normal/ in the MIMII layout; this folder's "
                            "train/ and test/ (DCASE layout) are already split")
        return labelled_wav_items(folder / "train", training=True), labelled_wav_items(folder / "test")
    if not (folder / "normal").is_dir():
        raise UserError(f"{folder}: expected train/ and test/ (DCASE) or normal/ and "
                        "abnormal/ (MIMII) subfolders")
    items = labelled_wav_items(folder)
    normal = [item for item in items if item[1] == 0]
    abnormal = [item for item in items if item[1] != 0]
    if train_normal_files is None and len(normal) < 2:
        raise UserError(f"{folder}: {len(normal)} normal clip(s) in normal/; the MIMII split needs at "
                        "least 2 (half train, the rest are tested with the abnormal clips)")
    count = train_normal_files if train_normal_files is not None else len(normal) // 2
    if not 0 < count < len(normal):
        raise UserError(f"{folder}: --train_normal_files {count} leaves no normal clips to "
                        f"{'train on' if count <= 0 else 'test'} (there are {len(normal)})")
    return normal[:count], normal[count:] + abnormal
