"""Binding training (loss goes down, seeded, resumable), retrieval and zero-shot metrics, search."""

import json

import numpy as np
import polars as pl
import pytest
import torch

import storage
from pipelines.binding.checkpoints import read_losses
from pipelines.binding.evaluate import (
    embed_modality,
    evaluate_retrieval,
    evaluate_zero_shot,
    ranks_of_targets,
    recall_at_k,
    zero_shot_classify,
    zero_shot_from_vectors,
)
from pipelines.binding.models import load_binding_encoder
from pipelines.binding.objective import cosine_lr, symmetric_infonce
from pipelines.binding.search import Query, combine, embed_query, search, search_store
from pipelines.binding.train import ResumeMismatch, TrainConfig, train_binding
from pipelines.build import build_dataset
from pipelines.config import BuildConfig
from pipelines.sources import create_source
from pipelines.synth import synthesize
from preprocess.video import VideoConfig
from storage.embeddings import commit_embeddings

TARGET = "fake-image-store"
CLASSES = ("ball", "siren", "bird", "clock")


def _class_of(label: str) -> str:
    from pipelines.binding.demo import audioset_class

    return audioset_class(label)


@pytest.fixture(scope="module")
def audio_dataset(tmp_path_factory):
    """12 AudioSet-layout clips built into shards, plus a target store whose 'image' vectors are a
    class direction plus per-sample noise (what a frozen image encoder would roughly give)."""
    root = tmp_path_factory.mktemp("bind")
    synthesize(root / "src", "audioset", 12, seed=3, duration=4.0, width=112, height=112, fps=10, sample_rate=16000)
    ds = root / "ds"
    build_dataset(
        [create_source("audioset", root / "src")],
        ds,
        BuildConfig(video=VideoConfig(size=112, num_crops=1), shard_size=8),
        progress=False,
    )
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((len(CLASSES), 16)).astype(np.float32)
    index = storage.scan_index(ds).select("sample_id", "shard", "label").collect()
    for shard in sorted(set(index["shard"].to_list())):
        part = index.filter(pl.col("shard") == shard)
        cls = [CLASSES.index(_class_of(label)) for label in part["label"]]
        vectors = centroids[cls] + 0.3 * rng.standard_normal((part.height, 16)).astype(np.float32)
        commit_embeddings(ds, TARGET, shard, part["sample_id"].to_list(), {"image": vectors})
    return ds


def _cfg(**kw):
    base = dict(epochs=4, batch_size=6, lr=3e-3, progress=False, warmup_fraction=0.25)
    return TrainConfig(**{**base, **kw})


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_training_reduces_the_loss_and_writes_loadable_checkpoints(audio_dataset, tmp_path):
    result = train_binding(audio_dataset, "audio", TARGET, tmp_path / "run", _cfg(epochs=8))
    assert result.finished and result.epochs == 8 and result.n_samples == 12
    assert result.steps == 8 * 2 and len(result.losses) == 16
    assert result.temperature == 0.05  # ImageBind's audio temperature by default
    assert result.epoch_losses[-1] < 0.8 * result.epoch_losses[0]
    rows = read_losses(tmp_path / "run")
    assert [r[3] for r in rows] == result.losses and [r[1] for r in rows] == list(range(16))
    assert len(result.checkpoints) == 3  # keep_checkpoints=3 by default
    assert all(p.exists() for p in result.checkpoints) and result.checkpoint == result.checkpoints[-1]
    state = torch.load(result.checkpoint.with_name("epoch-0008.state.pt"), weights_only=True)
    assert state["epoch"] == 8 and state["step"] == 16

    encoder = load_binding_encoder(tmp_path / "run")
    assert encoder.encoder_id == result.encoder_id and encoder.dim == 16  # projected 32 -> 16
    assert "proj.weight" in _weights(result.checkpoint)
    with storage.open_dataset(audio_dataset) as reader:
        sid = storage.scan_index(audio_dataset).collect()["sample_id"][0]
        vec = encoder.encode(reader[sid]["audio"][None])
    assert vec.shape == (1, 16) and abs(float(np.linalg.norm(vec)) - 1) < 1e-5


def test_same_seed_gives_identical_losses_and_weights(audio_dataset, tmp_path):
    a = train_binding(audio_dataset, "audio", TARGET, tmp_path / "a", _cfg(clips="random"))
    b = train_binding(audio_dataset, "audio", TARGET, tmp_path / "b", _cfg(clips="random"))
    assert a.losses == b.losses
    wa, wb = _weights(a.checkpoint), _weights(b.checkpoint)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.encoder_id == b.encoder_id
    c = train_binding(audio_dataset, "audio", TARGET, tmp_path / "c", _cfg(clips="random", seed=1))
    assert c.losses != a.losses
    # the caller's global RNG is left alone
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_binding(audio_dataset, "audio", TARGET, tmp_path / "d", _cfg(epochs=1))
    assert torch.equal(torch.rand(3), expected)


def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(audio_dataset, tmp_path):
    full = train_binding(audio_dataset, "audio", TARGET, tmp_path / "full", _cfg())
    first = train_binding(audio_dataset, "audio", TARGET, tmp_path / "cut", _cfg(), stop_after_epochs=2)
    assert first.epochs == 2 and not first.finished and first.losses == full.losses[:4]
    resumed = train_binding(audio_dataset, "audio", TARGET, tmp_path / "cut", _cfg())
    assert resumed.resumed_from_epoch == 2 and resumed.finished
    assert resumed.losses == full.losses and resumed.epoch_losses == full.epoch_losses
    wf, wr = _weights(full.checkpoint), _weights(resumed.checkpoint)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert read_losses(tmp_path / "cut") == read_losses(tmp_path / "full")
    # a finished run is returned as it is; other settings are refused rather than mixed in
    again = train_binding(audio_dataset, "audio", TARGET, tmp_path / "cut", _cfg())
    assert again.steps == full.steps and again.losses == full.losses
    with pytest.raises(ResumeMismatch):
        train_binding(audio_dataset, "audio", TARGET, tmp_path / "cut", _cfg(lr=1e-2))
    with pytest.raises(FileExistsError):
        train_binding(audio_dataset, "audio", TARGET, tmp_path / "cut", _cfg(), resume=False)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["epoch"] == 4


def test_training_needs_target_vectors_and_a_bindable_modality(audio_dataset, tmp_path):
    with pytest.raises(ValueError, match="cannot bind"):
        train_binding(audio_dataset, "text", TARGET, tmp_path / "x", _cfg())
    with pytest.raises(KeyError, match="no column"):
        train_binding(audio_dataset, "audio", TARGET, tmp_path / "x", _cfg(target_column="video"))
    with pytest.raises(ValueError, match="no stored sample has modality 'depth'"):
        train_binding(audio_dataset, "depth", TARGET, tmp_path / "x", _cfg())


def test_infonce_and_schedule():
    a = torch.eye(4)
    assert symmetric_infonce(a, a, 0.01) < 1e-3  # perfectly matched pairs
    assert abs(float(symmetric_infonce(torch.ones(4, 3), torch.ones(4, 3), 0.1)) - np.log(4)) < 1e-5
    lrs = [cosine_lr(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3


# --------------------------------------------------------------------------------------------------
# metrics on hand-made vectors


def test_recall_perfect_match_and_random_chance():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((200, 32)).astype(np.float32)
    perfect = recall_at_k(v, v)
    assert perfect.recall == {1: 1.0, 5: 1.0, 10: 1.0} and perfect.median_rank == 1
    assert perfect.chance == {1: 1 / 200, 5: 5 / 200, 10: 10 / 200}

    n = 2000
    q, g = rng.standard_normal((n, 64)), rng.standard_normal((n, 64))
    rand = recall_at_k(q, g, ks=(1, 10, 100))
    for k in (1, 10, 100):
        p = k / n
        assert abs(rand.recall[k] - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3, (k, rand.recall[k])
    assert abs(rand.median_rank - n / 2) < 0.1 * n

    # explicit partners: gallery shuffled, targets follow it
    perm = rng.permutation(200)
    assert recall_at_k(v, v[perm], targets=np.argsort(perm)).recall[1] == 1.0
    # ties never flatter: identical embeddings put the partner last
    assert ranks_of_targets(np.ones((5, 3)), np.ones((5, 3))).tolist() == [5] * 5


def test_zero_shot_on_hand_made_vectors():
    classes = ["ball", "siren", "bird"]
    class_vectors = np.eye(3, 8, dtype=np.float32)
    rng = np.random.default_rng(1)
    labels = [classes[i % 3] for i in range(30)]
    emb = class_vectors[[i % 3 for i in range(30)]] + 0.05 * rng.standard_normal((30, 8))
    result = zero_shot_from_vectors(emb, labels, class_vectors, classes)
    assert result.accuracy == 1.0 and result.chance == pytest.approx(1 / 3) and result.n == 30
    assert result.confusion == [[10, 0, 0], [0, 10, 0], [0, 0, 10]]
    wrong = labels[:]
    wrong[0] = "siren"  # sample 0 looks like a ball
    miss = zero_shot_from_vectors(emb, wrong, class_vectors, classes)
    assert miss.accuracy == pytest.approx(29 / 30) and miss.predictions[0] == "ball"
    assert miss.per_class_accuracy["siren"] == pytest.approx(10 / 11)


class WordEncoder:
    """A stand-in text encoder: a text's vector is the sum of one fixed direction per known word."""

    dim = 8
    modality = "text"
    words = {"ball": 0, "siren": 1, "bird": 2, "photo": 5, "a": 6}

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in text.replace(".", " ").split():
                if word in self.words:
                    out[i, self.words[word]] += 1.0
        return out


def test_zero_shot_through_a_text_encoder_with_prompt_ensembling():
    emb = np.eye(3, 8, dtype=np.float32)  # one sample per class, along its word direction
    result = zero_shot_classify(
        emb,
        ["ball", "siren", "bird"],
        WordEncoder(),
        ["ball", "siren", "bird"],
        templates=("a photo of a {}.", "a {}."),
    )
    assert result.accuracy == 1.0
    # a mapping label -> prompt name
    named = zero_shot_classify(emb[:1], ["round"], WordEncoder(), {"round": "ball", "loud": "siren"})
    assert named.accuracy == 1.0 and named.classes == ["round", "loud"]


def test_search_and_embedding_arithmetic():
    store = np.array([[1, 0, 0], [0, 1, 0], [0.7, 0.7, 0], [0, 0, 1], [-1, 0, 0]], np.float32)
    idx, scores = search(np.array([1, 0.1, 0], np.float32), store, k=3)
    assert idx[0].tolist() == [0, 2, 1] and scores[0][0] > scores[0][1] > scores[0][2]
    # image + sound: the sum of the two normalized queries finds what has both
    q = combine([np.array([2.0, 0, 0]), np.array([0, 0.5, 0])])
    assert abs(np.linalg.norm(q) - 1) < 1e-6 and search(q, store, 1)[0][0, 0] == 2
    # weights tilt it; k larger than the store is clipped
    assert search(combine([store[0], store[1]], [1.0, 0.1]), store, 10)[0][0].tolist()[:2] == [0, 2]
    assert search(store, store, 10)[0].shape == (5, 5)
    with pytest.raises(ValueError):
        search(np.ones(4), store, 1)


def test_embed_a_store_evaluate_it_and_search_it_with_a_query_file(audio_dataset, tmp_path):
    run = train_binding(audio_dataset, "audio", TARGET, tmp_path / "run", _cfg(epochs=6))
    encoder = load_binding_encoder(run.out_dir)
    audio_store = embed_modality(audio_dataset, encoder, "audio")
    assert audio_store == encoder.model_id
    vectors = storage.scan_embeddings(audio_dataset, audio_store).collect()
    assert vectors.height == 12 and vectors.schema["audio"] == pl.Array(pl.Float32, 16)

    retrieval = evaluate_retrieval(audio_dataset, (TARGET, "image"), (audio_store, "audio"))
    assert retrieval.n_queries == 12 and retrieval.chance[1] == pytest.approx(1 / 12)

    labels = {
        sid: _class_of(lab)
        for sid, lab in storage.scan_index(audio_dataset).select("sample_id", "label").collect().iter_rows()
    }

    class CentroidText:  # class prompts -> the mean target vector of the class
        def encode(self, texts):
            ids, vecs = storage.scan_embeddings(audio_dataset, TARGET).select("sample_id", "image").collect()
            vecs = vecs.to_numpy()
            out = []
            for text in texts:
                name = next(c for c in CLASSES if c in text)
                out.append(vecs[[labels[s] == name for s in ids]].mean(axis=0))
            return np.stack(out)

    zs = evaluate_zero_shot(audio_dataset, (audio_store, "audio"), CentroidText(), list(CLASSES), labels=labels)
    assert zs.n == 12 and zs.chance == 0.25 and 0 <= zs.accuracy <= 1

    # a query file through the same preprocessing as the build finds its own sample first
    index = storage.scan_index(audio_dataset).select("sample_id", "uri_audio").collect()
    sid, uri = index.row(0)
    path = audio_dataset.parent / "src" / uri
    hits = search_store(audio_dataset, audio_store, "audio", [Query(path, "audio", encoder)], k=3)
    assert hits[0].sample_id == sid and hits[0].rank == 1 and hits[0].score > 0.999
    assert "label" in hits[0].fields
    # arithmetic across two query terms, and a ready vector
    q = embed_query(path, "audio", encoder)
    both = search_store(
        audio_dataset,
        audio_store,
        "audio",
        [Query(path, "audio", encoder), Query(path, "audio", encoder, weight=2.0)],
        k=1,
    )
    assert both[0].sample_id == sid
    assert search_store(audio_dataset, audio_store, "audio", q, k=1)[0].sample_id == sid


def test_tower_can_start_from_a_full_imagebind_checkpoint(tmp_path):
    from safetensors.torch import save_file

    from encoders.binding import BindingModel
    from encoders.imagebind import build_model
    from encoders.imagebind_config import get_config
    from pipelines.binding.train import _load_init

    full = build_model("tiny", seed=7)
    path = tmp_path / "imagebind_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    model = BindingModel(get_config("tiny"), "audio", 16, seed=0)
    _load_init(model, str(path))
    ours = model.imagebind.state_dict()
    assert ours.keys() and all(torch.equal(v, full.state_dict()[k]) for k, v in ours.items())


def test_cli_train_embed_eval_and_search(audio_dataset, tmp_path, capsys):
    """`bindset train --embed`, `bindset eval --retrieval` and `bindset search` on the same dataset
    give what the library functions give."""
    from flows.cli import main

    run_dir = tmp_path / "cli-run"
    assert (
        main(
            [
                "train",
                str(audio_dataset),
                "--modality",
                "audio",
                "--target",
                TARGET,
                "--out",
                str(run_dir),
                "--epochs",
                "2",
                "--batch-size",
                "6",
                "--lr",
                "3e-3",
                "--embed",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "bound audio to fake-image-store (12 pairs" in out
    encoder = load_binding_encoder(run_dir)
    assert f"embedded audio into store {encoder.model_id}" in out
    assert storage.scan_embeddings(audio_dataset, encoder.model_id).collect().height == 12

    assert (
        main(["eval", str(audio_dataset), "--retrieval", f"{TARGET}:image", f"{encoder.model_id}:audio", "--json"]) == 0
    )
    figures = json.loads(capsys.readouterr().out)["retrieval"]
    expected = evaluate_retrieval(audio_dataset, (TARGET, "image"), (encoder.model_id, "audio")).to_dict()
    assert figures["recall"] == expected["recall"] and figures["n_queries"] == 12

    # a sample's own audio file, through the CLI, finds that sample first
    sid, uri = storage.scan_index(audio_dataset).select("sample_id", "uri_audio").collect().row(0)
    path = audio_dataset.parent / "src" / uri
    assert (
        main(
            [
                "search",
                str(path),
                "--modality",
                "audio",
                "--dataset",
                str(audio_dataset),
                "--store",
                encoder.model_id,
                "--encoder",
                str(run_dir),
                "-k",
                "3",
                "--json",
            ]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["sample_id"] == sid and hits[0]["score"] > 0.999

    # user errors: one line naming the problem, exit code 2
    assert main(["eval", str(audio_dataset), "--retrieval", "no-column", f"{encoder.model_id}:audio"]) == 2
    assert "expected STORE_ID:COLUMN" in capsys.readouterr().err
    assert main(["eval", str(audio_dataset), "--retrieval", "no-such-store:image", f"{encoder.model_id}:audio"]) == 2
    err = capsys.readouterr().err
    assert "has no embedding store 'no-such-store'; it has: " in err and TARGET in err and encoder.model_id in err
    assert main(["eval", str(audio_dataset)]) == 2
    assert "--retrieval" in capsys.readouterr().err
    assert (
        main(
            [
                "search",
                str(path),
                str(path),
                "--modality",
                "audio",
                "--dataset",
                str(audio_dataset),
                "--store",
                encoder.model_id,
                "--encoder",
                str(run_dir),
                "--weight",
                "1",
                "2",
                "3",
            ]
        )
        == 2
    )
    assert "--weight: give one value or one per query (2), got 3" in capsys.readouterr().err


def test_a_run_state_naming_files_outside_the_run_is_refused(audio_dataset, tmp_path):
    from pipelines.sources.base import PathOutsideRoot

    run = train_binding(audio_dataset, "audio", TARGET, tmp_path / "run", _cfg(epochs=1))
    state_file = run.out_dir / "state.json"
    state = json.loads(state_file.read_text())
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    state["checkpoints"] = ["../precious.txt"] + state["checkpoints"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(PathOutsideRoot, match="precious.txt"):
        train_binding(audio_dataset, "audio", TARGET, tmp_path / "run", _cfg(epochs=2))
    assert victim.read_text() == "keep me"
