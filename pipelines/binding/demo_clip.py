"""The image side of `bindset demo --bind` (pipelines/binding/demo.py): a tiny CLIP trained here and
frozen (no CLIP weights can be downloaded), and the image it sees of a video sample.

The CLIP is open_clip's `bindset-tiny-clip` layout at 112 px input (`register_demo_clip`), trained
from random init with CLIP's symmetric contrastive loss on frames drawn by the AudioSet-layout scene
renderer, each captioned from its scene (`caption_pairs`, `train_tiny_clip`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: the demo's CLIP: open_clip's `bindset-tiny-clip` layout at 112 px input (16 px patches: 7x7 tokens),
#: 24 text tokens
CLIP_MODEL = "bindset-demo-clip"

SCENE_FPS = 10  # the stored video keeps 2 frames per 2 s clip: a higher rate only costs synth time


def register_demo_clip(size: int = 112, name: str = CLIP_MODEL, context_length: int = 24) -> str:
    """Register the demo's OpenCLIP layout: `bindset-tiny-clip` with `size` px input and 16 px
    patches, and a 24-token text context (the captions are short; 77 would triple the text cost)."""
    from encoders.openclip import TINY_CONFIG, register_model_config

    config = {
        **TINY_CONFIG,
        "vision_cfg": {**TINY_CONFIG["vision_cfg"], "image_size": int(size), "patch_size": 16},
        "text_cfg": {**TINY_CONFIG["text_cfg"], "context_length": int(context_length)},
    }
    register_model_config(name, config)
    return name


# --------------------------------------------------------------------------------------------------
# 1. image-caption pairs and the tiny CLIP


_WHERE = (
    (0.2, "at the far left"),
    (0.4, "on the left"),
    (0.6, "in the middle"),
    (0.8, "on the right"),
    (float("inf"), "at the far right"),
)


def _where(x: float, width: int) -> str:
    u = x / width
    return next(word for bound, word in _WHERE if u < bound)


def _caption(sample, t: float, rng: np.random.Generator) -> str:
    """A caption naming the class, what the frame at time `t` shows (colour, light, direction) and
    where in the picture the sounding object is (the sound's pan follows it, so it is the one cue a
    frame and its sound share beyond the class; the tiny CLIP does not pick it up at this scale)."""
    p = sample.params
    if sample.kind in ("siren", "clock"):
        where = _where(p["x"], sample.width)
    else:
        where = _where(float(sample.position(t)[0]), sample.width)
    if sample.kind == "ball":
        c = p["color"]
        options = [
            f"a {c} ball bouncing on the ground",
            f"a bouncing {c} ball",
            f"a photo of a {c} ball",
            "a ball bouncing",
        ]
    elif sample.kind == "siren":
        c = "red" if bool(sample._siren_red(t)) else "blue"
        options = [
            f"a siren light flashing {c}",
            f"a police car with a {c} siren light",
            "an emergency vehicle with a siren",
            "a photo of a car siren",
        ]
    elif sample.kind == "bird":
        d = "left" if p["vx"] < 0 else "right"
        options = [
            f"a bird flying to the {d}",
            "a black bird flapping its wings",
            "a bird in the sky",
            "a photo of a flying bird",
        ]
    else:
        # the bob hangs at x + length * sin(angle): a positive angle swings it to the right
        side = "right" if float(sample.pendulum_angle(t)) > 0 else "left"
        options = [
            "a pendulum clock",
            f"a clock with its pendulum swinging to the {side}",
            "a photo of a wall clock",
            "a clock ticking",
        ]
    return f"{options[int(rng.integers(len(options)))]} {where}"


def caption_pairs(
    n_scenes: int, seed: int, frames_per_scene: int = 3, size: int = 224, duration_s: float = 2.0
) -> tuple[np.ndarray, list[str], list[str]]:
    """`(images [N,size,size,3] uint8, captions, classes)` from the AudioSet scene renderer.

    `seed` must differ from the image-audio data's, so the CLIP never sees those scenes."""
    from pipelines.synth import audioset
    from pipelines.synth.scene import sample_rng

    images, captions, classes = [], [], []
    for i in range(n_scenes):
        s = audioset.make_sample(seed, i, duration=duration_s, width=size, height=size, fps=SCENE_FPS)
        frames = audioset.render_frames(s)
        sync = int(round(s.event_time_s * s.fps))  # the all-white sync frame shows nothing
        candidates = [k for k in range(len(frames)) if k != sync]
        rng = sample_rng(seed, i, 0xC1)
        for k in rng.choice(candidates, size=min(frames_per_scene, len(candidates)), replace=False):
            images.append(frames[int(k)])
            captions.append(_caption(s, int(k) / s.fps, rng))
            classes.append(s.kind)
    return np.stack(images), captions, classes


def _clip_normalize(images_uint8: np.ndarray) -> torch.Tensor:
    """`[N,H,W,3] uint8` -> CLIP-normalized `[N,3,H,W]` float32, as the shard reader makes images."""
    from preprocess.image import normalize_rgb

    return torch.from_numpy(normalize_rgb(np.ascontiguousarray(images_uint8.transpose(0, 3, 1, 2))))


def train_tiny_clip(
    images: np.ndarray,
    captions: list[str],
    out_path: str | Path,
    *,
    seed: int = 0,
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 0.1,
    model_name: str = CLIP_MODEL,
    progress: bool = False,
) -> dict[str, Any]:
    """Train an OpenCLIP model from random init on (image, caption) pairs with CLIP's symmetric
    contrastive loss (learnable logit scale), then save its weights as safetensors at `out_path`.
    Returns `{"checkpoint", "losses", "epoch_losses", "seconds"}`."""
    import open_clip
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from encoders.openclip import load_openclip_model
    from pipelines.binding.objective import cosine_lr, deterministic_mode, epoch_order, param_groups, symmetric_infonce

    started = time.perf_counter()
    tokens = open_clip.get_tokenizer(model_name)(captions)
    n = len(captions)
    batch = min(batch_size, n)
    steps_per_epoch = max(n // batch, 1)
    total = steps_per_epoch * epochs
    warmup = max(1, total // 10)
    losses: list[float] = []
    with deterministic_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _ = load_openclip_model(model_name, None, "cpu", seed=seed)
        model.train().requires_grad_(True)
        opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
        step = 0
        with tqdm(total=total, desc="tiny CLIP", unit="step", disable=not progress) as bar:
            for epoch in range(epochs):
                order = epoch_order(seed, epoch, n)
                for b in range(steps_per_epoch):
                    idx = order[b * batch : (b + 1) * batch]
                    for g in opt.param_groups:
                        g["lr"] = cosine_lr(step, total, lr, warmup)
                    img = model.encode_image(_clip_normalize(images[idx.numpy()]), normalize=True)
                    txt = model.encode_text(tokens[idx], normalize=True)
                    temperature = 1.0 / model.logit_scale.exp().clamp(max=100.0)
                    loss = symmetric_infonce(img, txt, temperature)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    losses.append(float(loss.detach()))
                    step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval().requires_grad_(False)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out_path))
    epoch_losses = [float(np.mean(losses[e * steps_per_epoch : (e + 1) * steps_per_epoch])) for e in range(epochs)]
    return {
        "checkpoint": out_path,
        "losses": losses,
        "epoch_losses": epoch_losses,
        "seconds": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------------
# 2. the image of a video sample


def video_still(video: np.ndarray) -> np.ndarray:
    """Model-ready video `[clips*crops,3,F,S,S]` -> one image `[3,S,S]`: the first frame of the
    middle clip (the next stored frame if that one is flat, e.g. a sync flash)."""
    frames = [
        video[c, :, f] for c in [video.shape[0] // 2] + list(range(video.shape[0])) for f in range(video.shape[2])
    ]
    for frame in frames:
        if float(frame.std()) > 1e-3:
            return np.ascontiguousarray(frame)
    return np.ascontiguousarray(frames[0])


def video_frames(video: np.ndarray) -> np.ndarray:
    """Every stored frame of a model-ready video `[clips*crops,3,F,S,S]` that is not flat (a sync
    flash) -> `[k,3,S,S]`."""
    frames = [video[c, :, f] for c in range(video.shape[0]) for f in range(video.shape[2])]
    kept = [f for f in frames if float(f.std()) > 1e-3] or frames[:1]
    return np.ascontiguousarray(np.stack(kept))


__all__ = [
    "CLIP_MODEL",
    "caption_pairs",
    "register_demo_clip",
    "train_tiny_clip",
    "video_frames",
    "video_still",
]
