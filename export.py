"""Write the built-in benchmark in the official on-disk layouts of VQA v2, NLVR2 and SNLI-VE
(README, "Real data sets"), so that realdata.py's readers and the training program run
end to end on synthetic data, with nothing to download.

    python export.py --format all --out exported --size tiny     # exported/{vqav2,nlvr2,snli-ve}/
    python export.py --format nlvr2 --out /tmp/nlvr2 --limit 8    # a tiny copy for a quick check
    python export.py --help                                       # every flag

Benchmark train / val / test become VQA v2 train2014 / val2014 / test-dev2015 (questions
only, as the official test files), NLVR2 train / dev / test1 and SNLI-VE train / dev / test.
Texts are written verbatim (lower case, " ?" spaced as the benchmark has them). Image and
question ids are unique across the splits and do not depend on --limit.
"""
from __future__ import annotations

import argparse
import io
import json
import warnings
from collections import Counter
from pathlib import Path

from PIL import Image

from checkpoint import atomic_write, check_out_folder
from data import SPLITS, DataConfig, add_benchmark_flags, benchmark_config, examples_per_group, load_split
from metrics import normalize_answer
from realdata import SPLITS as OFFICIAL_SPLITS
from programs import ENTAILMENT_LABELS
from vqa_task import answer_vocabulary

FORMATS = tuple(OFFICIAL_SPLITS)                      # vqav2, nlvr2, snli-ve: what realdata.py reads
# our split -> the official file it becomes: as realdata.SPLITS reads them back, except that our
# VQA test split becomes test-dev (questions only), while the reader tests on val2014.
VQA_SUBTYPES = {"train": "train2014", "val": "val2014", "test": "test-dev2015"}
QUESTION_TYPES = ("how many", "is there a", "what colour is the", "what shape is the", "what size is the")
INFO = {"description": "Procedural scenes written by export.py in the VQA v2 layout", "version": "2.0"}
LICENSE = {"name": "the project's licence", "url": ""}


# ----------------------------------------------------------------------------- writing files

def write_json(path: Path, obj, lines: bool = False) -> None:
    """One JSON document, or (lines=True) one JSON object per line. Serialised before any file opens."""
    text = "".join(json.dumps(o) + "\n" for o in obj) if lines else json.dumps(obj)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))  # never half a file


def save_image(path: Path, pixels) -> None:
    """uint8 [H, W, 3] -> PNG (lossless) or JPEG (quality 95) by the file's suffix."""
    buffer = io.BytesIO()
    if path.suffix == ".png":
        Image.fromarray(pixels).save(buffer, format="PNG")
    else:  # no chroma subsampling: 4:2:0 would smear colour across the 8-10 px cells (mean error 4 vs 0.8)
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, subsampling=0)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


# ----------------------------------------------------------------------------- the splits

def load_splits(cfg: DataConfig, task: str, limit: int | None, progress: bool = False):
    """[(split, RawSplit, n, first_id)] for train, val, test: n = examples to write (the first n),
    first_id = the id of the split's image 0, counted over the whole splits before it."""
    out, first_id = [], 1
    for split in SPLITS:
        raw = load_split(cfg, task, split, progress)
        out.append((split, raw, len(raw.labels) if limit is None else min(limit, len(raw.labels)), first_id))
        first_id += len(raw.images)
    return out


def used_images(raw, n: int) -> list[int]:
    """Indices of the images the first n examples show."""
    return sorted(set(raw.image_index[:n].flatten().tolist()))


# ----------------------------------------------------------------------------- VQA v2

def answer_type(answer: str) -> str:
    return "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else "other"


def question_type(question: str) -> str:
    return next((p for p in QUESTION_TYPES if question.startswith(p)), " ".join(question.split()[:2]))


def export_vqa(cfg: DataConfig, root, limit: int | None = None, progress: bool = False) -> Path:
    """Questions, annotations (ten annotator answers each) and COCO-named JPEGs of task vqa."""
    root, vocabulary = Path(root), answer_vocabulary(cfg)
    answers = [normalize_answer(a) for a in vocabulary]  # as the organisers released them
    if answers != vocabulary:
        warnings.warn(f"answers changed by normalisation: {[a for a in vocabulary if normalize_answer(a) != a]}")
    for split, raw, n, first_id in load_splits(cfg, "vqa", limit, progress):
        subtype = VQA_SUBTYPES[split]
        folder = "test2015" if split == "test" else subtype  # test-dev images live in test2015/
        questions, annotations, asked = [], [], Counter()
        for i in range(n):
            image_id = first_id + int(raw.image_index[i, 0])
            question_id = image_id * 1000 + asked[image_id]  # the official pattern
            asked[image_id] += 1
            questions.append({"image_id": image_id, "question": raw.texts[i], "question_id": question_id})
            answer = answers[int(raw.labels[i])]  # the noise-free answer
            annotations.append({
                "question_id": question_id, "image_id": image_id, "question_type": question_type(raw.texts[i]),
                "answer_type": answer_type(answer), "multiple_choice_answer": answer,
                "answers": [{"answer": answers[a], "answer_confidence": "yes", "answer_id": k + 1}
                            for k, a in enumerate(raw.annotators[i].tolist())]})
        for j in used_images(raw, n):
            save_image(root / folder / f"COCO_{folder}_{first_id + j:012d}.jpg", raw.images[j])
        header = {"info": INFO, "license": LICENSE, "data_type": "mscoco", "data_subtype": subtype}
        write_json(root / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
                   {**header, "task_type": "Open-Ended", "questions": questions})
        if split != "test":  # the official test splits have questions only
            write_json(root / f"v2_mscoco_{subtype}_annotations.json", {**header, "annotations": annotations})
    return root


# ----------------------------------------------------------------------------- NLVR2

def nlvr2_identifiers(raw, n: int, split: str, per_group: int) -> list[str]:
    """split-set_id-pair_id-sentence_id for the first n examples. A set is one generated group
    (two scene pairs, four examples); pair_id / sentence_id number the group's distinct image
    pairs / texts in order of appearance. So a contrast pair (one statement, true on pair 0 and
    false on pair 1) shares set and sentence ids: one group of nlvr2_consistency."""
    out = []
    for i in range(n):
        first = i - i % per_group
        pairs = [tuple(p) for p in raw.image_index[first:i + 1].tolist()]
        texts = raw.texts[first:i + 1]
        pair_id = list(dict.fromkeys(pairs)).index(pairs[-1])  # dict: an ordered set
        sentence_id = list(dict.fromkeys(texts)).index(texts[-1])
        out.append(f"{split}-{i // per_group}-{pair_id}-{sentence_id}")
    return out


def export_nlvr2(cfg: DataConfig, root, limit: int | None = None, progress: bool = False) -> Path:
    """nlvr2/data/{train,dev,test1}.json (JSON Lines) and the two PNGs of each image pair of task reasoning."""
    root = Path(root)
    for split, raw, n, _ in load_splits(cfg, "reasoning", limit, progress):
        name = OFFICIAL_SPLITS["nlvr2"][split]
        lines, written = [], set()
        for i, identifier in enumerate(nlvr2_identifiers(raw, n, name, examples_per_group(cfg, "reasoning"))):
            line = {"identifier": identifier, "sentence": raw.texts[i], "label": str(bool(raw.labels[i]))}
            folder = root / name
            if name == "train":  # only train images sit in a 0..99 bucket, named in the line
                line["directory"] = int(identifier.split("-")[1]) % 100
                folder = root / "images" / "train" / str(line["directory"])
            pair = identifier.rsplit("-", 1)[0]  # split-set_id-pair_id
            if pair not in written:  # two or more sentences share a pair
                written.add(pair)
                for k, j in enumerate(raw.image_index[i].tolist()):
                    save_image(folder / f"{pair}-img{k}.png", raw.images[j])
            lines.append(line)
        write_json(root / "nlvr2" / "data" / f"{name}.json", lines, lines=True)
    return root


# ----------------------------------------------------------------------------- SNLI-VE

def export_snli_ve(cfg: DataConfig, root, limit: int | None = None, progress: bool = False,
                   old_keys: bool = False, list_format: bool = False) -> Path:
    """snli_ve_{train,dev,test}.jsonl and flickr30k_images/{id}.jpg of task entailment.

    old_keys: the 2018 key "Flikr30kID" (sic) with ".jpg" instead of "Flickr30K_ID" without.
    list_format: also the ALBEF / DiDE layout, {train,dev,test}.json lists with images/{id}.jpg.
    """
    root = Path(root)
    for split, raw, n, first_id in load_splits(cfg, "entailment", limit, progress):
        name = OFFICIAL_SPLITS["snli-ve"][split]
        lines, listed, asked = [], [], Counter()
        for i in range(n):
            j = int(raw.image_index[i, 0])
            image_id, label = first_id + j, ENTAILMENT_LABELS[int(raw.labels[i])]
            caption_id = f"{image_id}.jpg#0"
            line = {"annotator_labels": [label], "captionID": caption_id, "gold_label": label,
                    "pairID": f"{caption_id}r{asked[image_id]}{label[0]}",  # SNLI: caption, rank, label letter
                    "sentence1": raw.captions[j],  # the premise: the caption, never to be fed to the model
                    "sentence2": raw.texts[i]}     # the hypothesis
            line.update({"Flikr30kID": f"{image_id}.jpg"} if old_keys else {"Flickr30K_ID": str(image_id)})
            asked[image_id] += 1
            lines.append(dict(sorted(line.items())))  # the generator writes the keys sorted
            listed.append({"image": str(image_id), "sentence": raw.texts[i], "label": label})
        for j in used_images(raw, n):
            for folder in ("flickr30k_images", "images") if list_format else ("flickr30k_images",):
                save_image(root / folder / f"{first_id + j}.jpg", raw.images[j])
        write_json(root / f"snli_ve_{name}.jsonl", lines, lines=True)
        if list_format:
            write_json(root / f"{name}.json", listed)
    return root


# ----------------------------------------------------------------------------- entry points

def export(fmt: str, root, data_cfg: DataConfig, limit: int | None = None, progress: bool = False,
           old_keys: bool = False, list_format: bool = False) -> Path:
    """One format into `root`, or fmt="all": each into root/{vqav2,nlvr2,snli-ve}/."""
    root, data_cfg = Path(root), data_cfg.validate()
    if fmt == "all":
        for f in FORMATS:
            export(f, root / f, data_cfg, limit, progress, old_keys, list_format)
        return root
    if fmt == "vqav2":
        return export_vqa(data_cfg, root, limit, progress)
    if fmt == "nlvr2":
        return export_nlvr2(data_cfg, root, limit, progress)
    if fmt == "snli-ve":
        return export_snli_ve(data_cfg, root, limit, progress, old_keys, list_format)
    raise ValueError(f"format {fmt!r}: choose one of {', '.join(FORMATS)} or all")


def parse_args(argv=None) -> argparse.Namespace:
    """Flags -> namespace with .format, .out, .limit, .old_keys, .list_format and .data_config."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=[*FORMATS, "all"], help="which layout to write")
    parser.add_argument("--out", required=True, help="output folder, created if missing")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="at most N examples per split (the first N), with only their images (default: all)")
    parser.add_argument("--old-keys", action="store_true",
                        help='SNLI-VE: the 2018 key "Flikr30kID" with ".jpg" (default: "Flickr30K_ID", no ".jpg")')
    parser.add_argument("--list-format", action="store_true",
                        help="SNLI-VE: also the ALBEF/DiDE lists {train,dev,test}.json with images/{id}.jpg")
    add_benchmark_flags(parser)  # --size, then every data setting over its preset (--cache-dir, --workers, ...)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit {args.limit}: must be >= 1")
    try:
        check_out_folder("out", args.out)
    except ValueError as error:
        parser.error(str(error))
    try:
        args.data_config = benchmark_config(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None) -> Path:
    args = parse_args(argv)
    root = export(args.format, args.out, args.data_config, args.limit, True, args.old_keys, args.list_format)
    print(f"wrote {args.format} to {root}")
    return root


if __name__ == "__main__":
    main()
