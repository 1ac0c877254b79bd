"""Evidence that the four synthetic real-format sets carry a learnable signal, and builder throughput;
dataset cards and image rates of a real download; or, with --task=folder:<dir>, the card of a folder
task and every problem of its files.

    python -m benchmark.data_check [--work_dir=DIR] [--seed=0] [--chexpert_patients=1090] ...
    python -m benchmark.data_check --task=folder:<dir>

For each pair (CheXpert -> NIH ChestX-ray14, HAM10000 -> PAD-UFES-20) it generates the synthetic
manual_dir, builds the `64px` config with the real builder, extracts hand-crafted image features
(pooled pixels + local contrast), fits a numpy logistic regression on the in-distribution training
patients/lesions, and prints per-class ROC AUC on a held-out patient(lesion)-disjoint part, on the
official CheXpert validation+test splits, and on the shifted set (trained model applied unchanged).
Labels follow the harness tasks (`benchmark.harness.tasks`): the five CheXpert competition pathologies
(uncertain ignored in training, blank = negative), NIH Effusion as Pleural Effusion; the five
harmonised dermatology classes. It also prints generation and builder throughput (images/s) for
`download_and_prepare` and `as_dataset` iteration of the CheXpert 64px config.

Real data, before a long build (`benchmark.harness.dataset_card`):

    python -m benchmark.data_check --manual_dir=DIR [--metadata_only] [--timing]
    python -m benchmark.data_check --metadata_file=cxr_chexpert=train.csv.gz [--metadata_file=...]

prints a dataset card per metadata file of `DIR/<builder>/` (and of each lone metadata file given
as `--metadata_file=<builder>=<path>`, repeatable, no images): images, cases, views, label counts,
age and sex, and how many rows name a missing or unreadable image (decoded with the builders'
loader; only looked up with --metadata_only). --timing adds read+decode, build and read-the-build
rates of the real images of each builder folder beside a synthetic set of the same builder.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import tempfile
import time

if __name__ == "__main__":
    from benchmark import cli

    cli.quiet_start(sys.argv)

import numpy as np  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
from absl import app, flags  # noqa: E402

import tfds_builders  # noqa: F401, E402  (registers the builders)
from benchmark import cli  # noqa: E402
from benchmark.harness import dataset_card, image_timing, tasks  # noqa: E402
from benchmark.harness.metrics import roc_auc  # noqa: E402
from tfds_builders.folder_task import spec as folder_spec  # noqa: E402
from tfds_builders.synthetic import cxr, derm  # noqa: E402


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    """Sizes of the generated sets (CheXpert ~1.84 images per patient: 1,090 patients ~ 2,000 images)."""

    work_dir: str
    seed: int = 0
    image_size: int = 128
    chexpert_patients: int = 1090
    nih_patients: int = 400
    ham_lesions: int = 1200
    pad_patients: int = 300
    holdout_fraction: float = 0.2


@dataclasses.dataclass
class Arrays:
    """Features, labels [N, K] (nan = ignored) and group ids of one dataset split."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray


# ---------------------------------------------------------------------------------------- features / model

def image_features(images: np.ndarray) -> np.ndarray:
    """[N, 64, 64, C] uint8 -> [N, F]: 16x16 average-pooled pixels and 8x8-cell standard deviations."""
    x = images.astype(np.float32) / 255.0
    n, h, w, c = x.shape
    pooled = x.reshape(n, 16, h // 16, 16, w // 16, c).mean(axis=(2, 4))
    cells = x.reshape(n, 8, h // 8, 8, w // 8, c)
    local_std = cells.std(axis=(2, 4))
    return np.concatenate([pooled.reshape(n, -1), local_std.reshape(n, -1)], axis=1)


@dataclasses.dataclass(frozen=True)
class LinearModel:
    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: np.ndarray
    softmax: bool

    def scores(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.w + self.b
        if self.softmax:
            z = np.exp(z - z.max(axis=1, keepdims=True))
            return z / z.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-z))


def fit_linear(x: np.ndarray, y: np.ndarray, *, softmax: bool, l2: float = 1e-2, steps: int = 400,
               lr: float = 0.05) -> LinearModel:
    """Logistic (sigmoid per column, nan labels masked) or softmax regression by full-batch Adam."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    xs = (x - mean) / scale
    mask = ~np.isnan(y)
    t = np.nan_to_num(y)
    w = np.zeros((x.shape[1], y.shape[1]))
    b = np.zeros(y.shape[1])
    if not softmax:  # start from the base rates
        rate = np.clip((t * mask).sum(0) / np.maximum(mask.sum(0), 1), 1e-3, 1 - 1e-3)
        b = np.log(rate / (1 - rate))
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for step in range(1, steps + 1):
        z = xs @ w + b
        if softmax:
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            g = (p - t) / len(x)
        else:
            g = (1.0 / (1.0 + np.exp(-z)) - t) * mask / np.maximum(mask.sum(0), 1)
        grads = [xs.T @ g + l2 * w, g.sum(0)]
        for k, (param, grad) in enumerate(zip((w, b), grads)):
            m[k] = 0.9 * m[k] + 0.1 * grad
            v[k] = 0.999 * v[k] + 0.001 * grad * grad
            param -= lr * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v[k] / (1 - 0.999 ** step)) + 1e-8)
    return LinearModel(mean, scale, w, b, softmax)


def per_class_auc(y: np.ndarray, scores: np.ndarray) -> list[float]:
    """ROC AUC per column over the examples whose label is not nan (nan if one class is absent)."""
    out = []
    for k in range(y.shape[1]):
        keep = ~np.isnan(y[:, k])
        out.append(roc_auc(y[keep, k], scores[keep, k]) if keep.any() else float("nan"))
    return out


def holdout_mask(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for the examples of a random `fraction` of the groups."""
    unique = np.unique(groups)
    held = np.random.default_rng(seed).permutation(unique)[: max(1, round(fraction * len(unique)))]
    return np.isin(groups, held)


# ---------------------------------------------------------------------------------------- data

def build(name: str, manual_dir: pathlib.Path, data_dir: pathlib.Path, config: str = "64px"):
    """download_and_prepare of `name/config`; returns (builder, seconds)."""
    builder = tfds.builder(name, config=config, data_dir=str(data_dir))
    start = time.perf_counter()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder, time.perf_counter() - start


def read(builder, source: tasks.Source) -> Arrays:
    """Images -> features, and the task's harmonised labels and group ids, for one source split."""
    ds = builder.as_dataset(split=source.split)
    if source.keep is not None:
        ds = ds.filter(source.keep)
    ds = ds.map(lambda ex: (ex["image"], source.to_meta(ex)))
    images, labels, groups = [], [], []
    for image, meta in tfds.as_numpy(ds.batch(256)):
        images.append(image)
        labels.append(meta["label"])
        groups.append(meta["group_id"])
    return Arrays(image_features(np.concatenate(images)), np.concatenate(labels), np.concatenate(groups))


def _row(name: str, aucs: list[float], extra: str = "") -> str:
    cells = " ".join(f"{a:6.3f}" if not np.isnan(a) else "   nan" for a in aucs)
    return f"  {name:<30} {cells}   mean {np.nanmean(aucs):.3f}{extra}"


# ---------------------------------------------------------------------------------------- checks

def check_cxr(cfg: CheckConfig) -> None:
    root = pathlib.Path(cfg.work_dir)
    start = time.perf_counter()
    chexpert_dir = cxr.write_chexpert(root / "manual" / "cxr_chexpert", num_patients=cfg.chexpert_patients,
                                      seed=cfg.seed, image_size=cfg.image_size)
    gen_s = time.perf_counter() - start
    n_images = sum(1 for _ in chexpert_dir.rglob("*.jpg"))
    builder, prep_s = build("cxr_chexpert", chexpert_dir, root / "tfds")
    start = time.perf_counter()
    n_read = sum(1 for _ in tfds.as_numpy(builder.as_dataset(split="train+validation+test")))
    read_s = time.perf_counter() - start
    print(f"CheXpert synthetic: {cfg.chexpert_patients} patients, {n_images} images ({cfg.image_size} px wide)")
    print(f"  generate (write_chexpert)            {n_images / gen_s:8.1f} images/s  ({gen_s:.1f} s)")
    print(f"  download_and_prepare (64px config)   {n_images / prep_s:8.1f} images/s  ({prep_s:.1f} s)")
    print(f"  as_dataset iteration (decoded, 64px) {n_read / read_s:8.1f} images/s  ({n_read} images, {read_s:.1f} s)")

    task = tasks.cxr(tasks.TaskOptions(uncertainty="u_ignore"))
    train_all = read(builder, task.train)
    held = holdout_mask(train_all.groups, cfg.holdout_fraction, cfg.seed)
    model = fit_linear(train_all.x[~held], train_all.y[~held], softmax=False)
    official = [read(builder, s) for s in task.test_sources["in_distribution"]]
    off_x = np.concatenate([a.x for a in official])
    off_y = np.concatenate([a.y for a in official])

    start = time.perf_counter()
    nih_dir = cxr.write_nih14(root / "manual" / "cxr_nih14", num_patients=cfg.nih_patients, seed=cfg.seed,
                              image_size=cfg.image_size)
    nih_gen_s = time.perf_counter() - start
    nih_builder, _ = build("cxr_nih14", nih_dir, root / "tfds")
    nih_test = task.test_sources["shifted"][0]
    nih = [read(nih_builder, dataclasses.replace(nih_test, split=split)) for split in ("train", "test")]
    nih_x, nih_y = np.concatenate([a.x for a in nih]), np.concatenate([a.y for a in nih])
    print(f"NIH synthetic: {cfg.nih_patients} patients, {len(nih_y)} images, "
          f"generated at {len(nih_y) / nih_gen_s:.1f} images/s")

    print("CXR logistic regression on 64px features, trained on CheXpert train patients (uncertain ignored)")
    print(f"  {'per-label ROC AUC':<30} " + " ".join(f"{c[:6]:>6}" for c in task.class_names))
    n_held_pos = np.nansum(train_all.y[held], axis=0).astype(int).tolist()
    print(_row("CheXpert held-out patients", per_class_auc(train_all.y[held], model.scores(train_all.x[held])),
               f"   ({held.sum()} images, positives {n_held_pos})"))
    print(_row("CheXpert valid+test (official)", per_class_auc(off_y, model.scores(off_x)),
               f"   ({len(off_y)} images, positives {np.nansum(off_y, axis=0).astype(int).tolist()})"))
    print(_row("NIH (shifted, all images)", per_class_auc(nih_y, model.scores(nih_x)),
               f"   ({len(nih_y)} images, positives {np.nansum(nih_y, axis=0).astype(int).tolist()})"))
    nih_held = holdout_mask(nih[0].groups, 0.5, cfg.seed)
    nih_model = fit_linear(nih[0].x[~nih_held], nih[0].y[~nih_held], softmax=False)
    nih_ref = per_class_auc(nih[0].y[nih_held], nih_model.scores(nih[0].x[nih_held]))
    print(_row("NIH trained on NIH (reference)", nih_ref, "   (half of NIH train_val patients held out)"))


def check_derm(cfg: CheckConfig) -> None:
    root = pathlib.Path(cfg.work_dir)
    start = time.perf_counter()
    ham_dir = derm.write_ham10000(root / "manual" / "derm_ham10000", num_lesions=cfg.ham_lesions, seed=cfg.seed,
                                  image_size=cfg.image_size)
    ham_gen_s = time.perf_counter() - start
    start = time.perf_counter()
    pad_dir = derm.write_pad_ufes20(root / "manual" / "derm_pad_ufes20", num_patients=cfg.pad_patients,
                                    seed=cfg.seed, image_size=cfg.image_size)
    pad_gen_s = time.perf_counter() - start
    ham_builder, ham_prep_s = build("derm_ham10000", ham_dir, root / "tfds")
    pad_builder, _ = build("derm_pad_ufes20", pad_dir, root / "tfds")
    task = tasks.derm(tasks.TaskOptions())
    ham = read(ham_builder, task.train)
    pad = read(pad_builder, task.test_sources["shifted"][0])
    n_ham = ham_builder.info.splits["train"].num_examples
    n_pad = pad_builder.info.splits["train"].num_examples
    print(f"HAM10000 synthetic: {cfg.ham_lesions} lesions, {n_ham} images, generated at "
          f"{n_ham / ham_gen_s:.1f} images/s, download_and_prepare (64px) at {n_ham / ham_prep_s:.1f} images/s")
    print(f"PAD-UFES-20 synthetic: {cfg.pad_patients} patients, {n_pad} images, "
          f"generated at {n_pad / pad_gen_s:.1f} images/s")
    held = holdout_mask(ham.groups, cfg.holdout_fraction, cfg.seed)
    model = fit_linear(ham.x[~held], ham.y[~held], softmax=True)
    print("Derm softmax regression on 64px features, trained on HAM10000 lesions (5 harmonised classes)")
    print(f"  {'one-vs-rest ROC AUC':<30} " + " ".join(f"{c[:6]:>6}" for c in task.class_names))
    for name, data in (("HAM10000 held-out lesions", Arrays(ham.x[held], ham.y[held], ham.groups[held])),
                       ("PAD-UFES-20 (shifted)", pad)):
        probs = model.scores(data.x)
        top1 = float(np.mean(probs.argmax(1) == data.y.argmax(1)))
        counts = data.y.sum(0).astype(int).tolist()
        extra = f"   top-1 {top1:.3f} ({len(data.y)} images, per class {counts})"
        print(_row(name, per_class_auc(data.y, probs), extra))


def print_cards(manual_dir: str | None, metadata_files: dict[str, str], *, decode: bool) -> int:
    """Prints the card of every source (a failing source: its one-line error); returns how many
    sources failed."""
    failed = 0
    for src in dataset_card.find_sources(manual_dir, metadata_files):
        try:
            lines = dataset_card.render(dataset_card.read_facts(src, decode=decode))
        except (ValueError, FileNotFoundError) as e:
            failed += 1
            lines = [f"{src.builder}: {src.csv}", f"  error: {str(e).splitlines()[0]}"]
        print("\n".join(lines) + "\n", flush=True)
    return failed


def print_timing(manual_dir: str, work_dir: pathlib.Path) -> None:
    """Prints image rates of the real images of each builder folder of `manual_dir` beside a
    synthetic set of the same builder (the cpu preset's size and image size)."""
    from benchmark.harness.presets import get_preset

    preset = get_preset("cpu")
    rates = []
    for name in dataset_card.BUILDERS:
        folder = pathlib.Path(manual_dir) / name
        if not folder.is_dir() or not image_timing.source_files(name, folder):
            continue
        rates.append(image_timing.measure(name, folder, work_dir / "real", "real"))
        rates.append(image_timing.measure_synthetic(
            name, work_dir / "synthetic", size=preset.synthetic_sizes[name],
            image_size=preset.synthetic_image_size))
    if not rates:
        raise FileNotFoundError(f"--timing: no builder folder of --manual_dir={manual_dir} holds "
                                "images")
    print(f"image rates (one run each, {os.cpu_count()} cores; synthetic: the cpu preset's sets)")
    print("\n".join(image_timing.render(rates)))


def check_folder(flag: str) -> int:
    """What `--task=folder:<dir>` does: prints the card of the folder task, or every problem of its
    files (one `error:` line each, images decoded); returns the exit status."""
    if not flag.startswith(tasks.FOLDER_PREFIX):
        raise ValueError(f"--task={flag}: expected {tasks.FOLDER_PREFIX}<dir> (the synthetic sets are "
                         "checked without --task)")
    root = flag[len(tasks.FOLDER_PREFIX):]
    if not os.path.isdir(root):
        raise ValueError(f"--task={flag}: no such directory")
    found = folder_spec.problems(root, decode=True)
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    if found:
        print(f"{len(found)} problem(s); nothing can be built from {root} until they are fixed",
              file=sys.stderr)
        return 1
    print("\n".join(dataset_card.folder_card(folder_spec.read_folder(root))))
    return 0


def run(cfg: CheckConfig) -> None:
    """Runs both checks, printing their figures."""
    check_cxr(cfg)
    check_derm(cfg)


FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", None, "Where to write the synthetic sets and builds (default: a temp dir).")
flags.DEFINE_integer("seed", 0, "Generator and hold-out seed.")
flags.DEFINE_integer("image_size", 128, "Width (CXR) / height (derm) of the generated source images.")
flags.DEFINE_integer("chexpert_patients", 1090, "Synthetic CheXpert patients (~2,000 images).")
flags.DEFINE_integer("nih_patients", 400, "Synthetic NIH patients.")
flags.DEFINE_integer("ham_lesions", 1200, "Synthetic HAM10000 lesions.")
flags.DEFINE_integer("pad_patients", 300, "Synthetic PAD-UFES-20 patients.")
if "manual_dir" not in FLAGS:  # a process importing benchmark.run too keeps its (same) flag
    flags.DEFINE_string("manual_dir", None, "Real data: print the dataset card of each builder "
                        "folder <manual_dir>/<builder>/ (the layout benchmark.run reads) instead "
                        "of the synthetic checks.")
flags.DEFINE_multi_string("metadata_file", [], "Real data: <builder>=<path> of a lone metadata file "
                          "(e.g. cxr_chexpert=chexpert_train.csv.gz) to print a card of; repeatable.")
flags.DEFINE_bool("metadata_only", False, "With --manual_dir: look the images up without decoding "
                  "them (fast on a full download).")
flags.DEFINE_bool("timing", False, "With --manual_dir: also time reading+decoding, building and "
                  "reading the build of each builder folder's images beside a synthetic set.")


def metadata_files() -> dict[str, str]:
    """--metadata_file values as {builder: path}; ValueError naming the first bad one."""
    out = {}
    for value in FLAGS.metadata_file:
        builder, sep, path = value.partition("=")
        if not sep or not path:
            raise ValueError(f"--metadata_file={value}: expected <builder>=<path>, e.g. "
                             "cxr_chexpert=chexpert_train.csv.gz")
        if builder not in dataset_card.BUILDERS:
            raise ValueError(f"--metadata_file={value}: unknown builder {builder!r}; expected one "
                             f"of {', '.join(dataset_card.BUILDERS)}")
        if builder in out:
            raise ValueError(f"--metadata_file={value}: {builder} is given twice")
        if not os.path.isfile(path):
            raise ValueError(f"--metadata_file={value}: no such file {path}")
        out[builder] = path
    return out


def check_flags() -> None:
    """Raises ValueError naming the first bad flag (before anything is generated)."""
    real = FLAGS.manual_dir is not None or FLAGS.metadata_file
    for name in ("metadata_only", "timing"):
        if FLAGS[name].value and FLAGS.manual_dir is None:
            raise ValueError(f"--{name}: needs --manual_dir (the real data folder)")
    if FLAGS.metadata_only and FLAGS.timing:
        raise ValueError("--metadata_only with --timing: timing decodes and builds the images; "
                         "give one of them")
    if FLAGS.manual_dir is not None and not os.path.isdir(FLAGS.manual_dir):
        raise ValueError(f"--manual_dir={FLAGS.manual_dir}: no such directory")
    if real:
        metadata_files()
    if FLAGS.seed < 0:
        raise ValueError(f"--seed={FLAGS.seed}: expected an integer >= 0")
    if FLAGS.image_size < 64:
        raise ValueError(f"--image_size={FLAGS.image_size}: expected >= 64 (the checks read the 64px builds)")
    for name in ("chexpert_patients", "nih_patients", "ham_lesions", "pad_patients"):
        if FLAGS[name].value < 10:
            raise ValueError(f"--{name}={FLAGS[name].value}: expected at least 10 (held-out parts need cases)")
    work_dir = FLAGS.work_dir
    if work_dir is not None and os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise ValueError(f"--work_dir={work_dir}: exists and is not a directory")
    if work_dir is not None and os.path.isdir(work_dir) and not os.access(work_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--work_dir={work_dir}: directory is not writable")
    if work_dir is not None and os.path.isdir(work_dir) and os.listdir(work_dir):
        raise ValueError(f"--work_dir={work_dir}: not empty; the checks generate and build (and time "
                         "the build) from scratch, so give an empty or new folder")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; every setting is a --flag")
    if not FLAGS["verbosity"].present:
        cli.quiet_logs()
    tfds.disable_progress_bar()
    try:
        if "task" in FLAGS and FLAGS["task"].present:  # (a test process may hold run's --task)
            sys.exit(check_folder(FLAGS.task))
        check_flags()
        if FLAGS.manual_dir is not None or FLAGS.metadata_file:
            failed = print_cards(FLAGS.manual_dir, metadata_files(), decode=not FLAGS.metadata_only)
            if FLAGS.timing:
                with tempfile.TemporaryDirectory() as tmp:
                    print_timing(FLAGS.manual_dir, pathlib.Path(FLAGS.work_dir or tmp))
            sys.exit(1 if failed else 0)
        with tempfile.TemporaryDirectory() as tmp:
            run(CheckConfig(
                work_dir=FLAGS.work_dir or tmp, seed=FLAGS.seed, image_size=FLAGS.image_size,
                chexpert_patients=FLAGS.chexpert_patients, nih_patients=FLAGS.nih_patients,
                ham_lesions=FLAGS.ham_lesions, pad_patients=FLAGS.pad_patients,
            ))
    except cli.user_errors() as e:
        cli.exit_on_error(e)


if __name__ == "__main__":
    flags.DEFINE_string("task", None, "folder:<dir>: print the card of that folder task and every "
                        "problem of its files instead of checking the synthetic sets.")
    app.run(main)
