"""Offline synthetic-to-real street scenes for the ProDA demo and tests.

Writes a *source* set in GTA5's on-disk layout and a *target* set in Cityscapes's layout,
so that the real loaders, entry points and stage scripts run unchanged on a laptop CPU:

    <out>/GTA5/images/00001.png          RGB render
    <out>/GTA5/labels/00001.png          Cityscapes label ids (palette PNG, as GTA5 ships them)
    <out>/GTA5/split.mat                 trainIds / valIds / testIds (1-based, N x 1)
    <out>/cityscapes/leftImg8bit/{train,val}/<city>/<city>_<seq>_000019_leftImg8bit.png
    <out>/cityscapes/gtFine/{train,val}/<city>/<city>_<seq>_000019_gtFine_{labelIds,color}.png
    <out>/.complete                      marker with the generation parameters

Both domains share one scene model (horizon, road in perspective, sidewalks, a skyline of
buildings and trees, cars, people, poles and signs; every scene randomised) and differ only
in how a scene is rendered, the way game renders differ from photographs:

* source ("game"): saturated palette, flat shading with a smooth low-frequency texture,
  crisp edges, no sensor noise;
* target ("photo"): a duller, greyer palette (paler sky, darker vegetation, lighter
  asphalt, muted cars and clothes), per-image white balance, exposure and contrast, cast shadows, vignetting, a
  high-frequency grain, lens blur and sensor noise, plus the ego-vehicle bonnet that
  Cityscapes labels as void.

Geometry stays informative across domains (sky is up, road is down the middle), so a
source-only model is partly right on the target and its confidence tracks its accuracy,
which is what self-training with pseudo labels needs.

    python -m proda.demo.synthetic --out demo/data --n_source 200 --n_target_train 200 \\
        --n_target_val 60 --size 256,128 --seed 0
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.io as sio
from PIL import Image, ImageDraw, ImageFilter

from dacommon.files import atomic_write

logger = logging.getLogger(__name__)

# Cityscapes label ids (not train ids): what GTA5 and Cityscapes label files store.
ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = 7, 8, 11, 17, 20, 21, 22, 23, 24, 26
EGO_VEHICLE = 1  # void in Cityscapes: mapped to the ignore index by the loader
SCENE_LABEL_IDS = (ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR)

# Official Cityscapes colours of the 34 label ids (cityscapesScripts labels.py), used for the
# palette of GTA5-style label PNGs and for the gtFine_color visualisation.
LABEL_ID_COLORS = np.array([
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81),
    (128, 64, 128), (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70),
    (102, 102, 156), (190, 153, 153), (180, 165, 180), (150, 100, 100), (150, 120, 90),
    (153, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35),
    (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)

TRAIN_CITIES = ("aachen", "bochum")
VAL_CITIES = ("frankfurt", "lindau")
SOURCE_DIR, TARGET_DIR, MARKER = "GTA5", "cityscapes", ".complete"
VERSION = 2  # bump when the renders change, so that an existing set is regenerated


@dataclass(frozen=True)
class Domain:
    """How a scene is rendered: palette, texture and camera/sensor effects."""

    name: str
    palette: Dict[str, Sequence[Tuple[int, int, int]]]  # per part: base colours to pick from
    jitter: float            # per-instance colour jitter (std, 0-255 scale)
    smooth_tex: float        # amplitude of low-frequency texture
    grain_tex: float         # amplitude of high-frequency grain (class-modulated)
    white_balance: float     # std of per-image channel gains
    exposure: Tuple[float, float]   # range of a per-image gain
    gamma: Tuple[float, float]      # range of a per-image gamma
    contrast: Tuple[float, float]   # range of contrast around mid-grey
    shadows: float           # probability of a cast shadow over the ground
    vignette: float          # corner darkening
    blur: float              # Gaussian blur radius (pixels at 256 px width)
    noise: float             # sensor noise std (0-255 scale)
    ego_vehicle: bool        # draw the Cityscapes bonnet (void label) at the bottom
    horizon: Tuple[float, float]    # horizon height range (fraction of H)
    cars: Tuple[int, int]    # number of cars (inclusive range)
    persons: Tuple[int, int]


GAME = Domain(
    name="source",
    palette={
        "sky": [(95, 155, 235), (120, 170, 240)],
        "road": [(80, 80, 88)], "marking": [(235, 235, 225)],
        "sidewalk": [(180, 160, 165), (170, 165, 150)],
        "building": [(175, 85, 65), (205, 190, 150), (140, 140, 155), (215, 205, 190), (120, 100, 90)],
        "window": [(70, 100, 150)],
        "vegetation": [(50, 140, 40), (70, 155, 50)], "terrain": [(150, 175, 75)],
        "pole": [(85, 85, 90)], "sign": [(235, 200, 20), (30, 80, 210)],
        "car": [(200, 30, 30), (30, 60, 190), (235, 235, 235), (35, 35, 40), (150, 150, 165), (240, 200, 40)],
        "glass": [(40, 55, 80)], "wheel": [(20, 20, 20)],
        "clothes": [(200, 40, 40), (40, 40, 160), (40, 40, 40), (230, 180, 40), (60, 130, 60)],
        "skin": [(230, 185, 150)],
    },
    jitter=10.0, smooth_tex=10.0, grain_tex=0.0, white_balance=0.0, exposure=(1.0, 1.0),
    gamma=(1.0, 1.0), contrast=(1.0, 1.0), shadows=0.0, vignette=0.0, blur=0.0, noise=0.0,
    ego_vehicle=False, horizon=(0.36, 0.48), cars=(0, 4), persons=(0, 3),
)

PHOTO = Domain(
    name="target",
    palette={  # half-way from the game palette to duller, greyer "photo" colours
        "sky": [(118, 162, 222), (140, 175, 222), (150, 172, 205)],
        "road": [(96, 95, 100)], "marking": [(218, 218, 208)],
        "sidewalk": [(165, 152, 152), (152, 150, 140)],
        "building": [(162, 100, 82), (190, 180, 152), (130, 130, 140), (200, 192, 180), (108, 95, 88)],
        "window": [(58, 75, 105)],
        "vegetation": [(55, 125, 42), (75, 135, 52)], "terrain": [(138, 155, 80)],
        "pole": [(78, 78, 82)], "sign": [(218, 190, 40), (40, 80, 180)],
        "car": [(165, 35, 35), (40, 60, 150), (218, 218, 218), (32, 32, 36), (135, 135, 146), (205, 180, 80)],
        "glass": [(35, 45, 60)], "wheel": [(22, 22, 22)],
        "clothes": [(160, 45, 45), (45, 48, 125), (35, 35, 35), (190, 155, 65), (65, 110, 65)],
        "skin": [(215, 172, 142)],
    },
    jitter=14.0, smooth_tex=14.0, grain_tex=8.0, white_balance=0.06, exposure=(0.8, 1.15),
    gamma=(0.85, 1.2), contrast=(0.8, 1.0), shadows=0.4, vignette=0.25, blur=0.9, noise=5.0,
    ego_vehicle=True, horizon=(0.38, 0.50), cars=(1, 5), persons=(0, 4),
)

# How strongly each label id carries the high-frequency grain in the photo domain.
GRAIN_BY_LABEL = np.full(len(LABEL_ID_COLORS), 0.5)
GRAIN_BY_LABEL[[ROAD, SIDEWALK, BUILDING, VEGETATION, TERRAIN, SKY, CAR, PERSON, POLE, SIGN, EGO_VEHICLE]] = \
    [1.0, 0.7, 0.6, 1.4, 1.2, 0.1, 0.3, 0.5, 0.3, 0.2, 0.2]


class _Canvas:
    """A scene under construction: an instance-id map plus each instance's label id and colour."""

    def __init__(self, width: int, height: int, domain: Domain, rng: np.random.Generator):
        """Start from an empty map; instance 0 is reserved for 'nothing drawn yet'."""
        self.w, self.h, self.domain, self.rng = width, height, domain, rng
        self.inst = np.zeros((height, width), dtype=np.uint8)
        self.labels: List[int] = [0]
        self.colors: List[Tuple[float, float, float]] = [(0.0, 0.0, 0.0)]

    def new(self, label_id: int, part: str, color: Optional[Sequence[float]] = None) -> int:
        """Register an instance of `label_id` coloured from the domain palette entry `part`."""
        if len(self.labels) >= 255:
            raise RuntimeError("too many instances in one synthetic scene")
        if color is None:
            choices = self.domain.palette[part]
            base = np.asarray(choices[self.rng.integers(len(choices))], dtype=np.float64)
            color = base + self.rng.normal(0.0, self.domain.jitter, 3)
        self.labels.append(label_id)
        self.colors.append(tuple(float(c) for c in color))
        return len(self.labels) - 1

    def draw(self) -> ImageDraw.ImageDraw:
        """A PIL drawing context on the instance map (call `commit` afterwards)."""
        self._img = Image.fromarray(self.inst, mode="L")
        return ImageDraw.Draw(self._img)

    def commit(self) -> None:
        """Copy what was drawn with `draw()` back into the instance map."""
        self.inst = np.asarray(self._img, dtype=np.uint8).copy()


def _scene_geometry(rng: np.random.Generator, w: int, h: int, domain: Domain) -> Dict[str, float]:
    """Random camera and street layout: horizon, vanishing point, road and sidewalk widths."""
    return {
        "y_h": h * rng.uniform(*domain.horizon),
        "x_v": w * rng.uniform(0.38, 0.62),
        "road": rng.uniform(0.30, 0.48) * w,       # road half width at the bottom row
        "walk": rng.uniform(0.10, 0.22) * w,       # sidewalk width at the bottom row
        "verge_l": rng.choice([0.0, rng.uniform(0.05, 0.2) * w]),  # terrain strip, left
        "verge_r": rng.choice([0.0, rng.uniform(0.05, 0.2) * w]),
    }


def _skyline(cv: _Canvas, g: Dict[str, float]) -> np.ndarray:
    """Buildings and trees along the street: one top row per column, taller towards the sides."""
    rng, w, h = cv.rng, cv.w, cv.h
    widths = rng.integers(max(4, w // 16), max(6, w // 5), size=w // 4 + 2)
    edges = np.concatenate([[0], np.cumsum(widths)])
    n_seg = int(np.searchsorted(edges, w)) + 1
    seg_of_col = np.searchsorted(edges[1:n_seg + 1], np.arange(w), side="right")
    is_tree = rng.random(n_seg) < 0.3
    seg_inst = np.array([cv.new(VEGETATION, "vegetation") if t else cv.new(BUILDING, "building")
                         for t in is_tree], dtype=np.uint8)
    base = rng.uniform(0.02, 0.2, n_seg) * h
    x = np.arange(w)
    height = base[seg_of_col] + np.abs(x - g["x_v"]) * (h / w) * rng.uniform(0.1, 0.6)
    bumps = 0.04 * h * np.sin(x * rng.uniform(0.3, 0.8) + rng.uniform(0, 6)) * is_tree[seg_of_col]
    top = g["y_h"] - height + bumps
    ys = np.arange(h)[:, None]
    cv.inst = np.where(ys >= top[None, :], seg_inst[seg_of_col][None, :], cv.inst).astype(np.uint8)
    return seg_inst


def _ground(cv: _Canvas, g: Dict[str, float]) -> None:
    """Road, lane marking, sidewalks and verges below the horizon, in one-point perspective."""
    h, w = cv.h, cv.w
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    s = np.clip((ys - g["y_h"]) / (h - g["y_h"]), 1e-6, None)  # depth scale: 0 at horizon, 1 at bottom
    below = ys > g["y_h"]
    d = (xs - g["x_v"]) / s  # lateral offset as it would be on the bottom row
    road, walk = g["road"], g["walk"]
    left, right = d < 0, d >= 0
    verge = np.where(left, g["verge_l"], g["verge_r"])
    ids = {k: cv.new(lbl, part) for k, lbl, part in (
        ("road", ROAD, "road"), ("mark", ROAD, "marking"), ("walk_l", SIDEWALK, "sidewalk"),
        ("walk_r", SIDEWALK, "sidewalk"), ("verge", TERRAIN, "terrain"))}
    ad = np.abs(d)
    out = cv.inst.copy()
    out[below & (ad < road + walk + verge) & (ad >= road + walk)] = ids["verge"]
    out[below & (ad < road + walk) & (ad >= road) & left] = ids["walk_l"]
    out[below & (ad < road + walk) & (ad >= road) & right] = ids["walk_r"]
    out[below & (ad < road)] = ids["road"]
    dashes = np.mod(3.0 / s, 1.0) < 0.5  # dash length shrinks with depth
    out[below & (ad < 0.012 * w) & dashes] = ids["mark"]
    cv.inst = out


def _objects(cv: _Canvas, g: Dict[str, float]) -> None:
    """Cars on the road, people on the sidewalks, poles with signs at the kerb; far ones first."""
    rng, w, h, dom = cv.rng, cv.w, cv.h, cv.domain
    items = []  # (depth scale, kind, lateral offset at the bottom row)
    for _ in range(rng.integers(dom.cars[0], dom.cars[1] + 1)):
        items.append((rng.uniform(0.15, 1.0), "car", rng.uniform(-0.8, 0.8) * g["road"]))
    for _ in range(rng.integers(dom.persons[0], dom.persons[1] + 1)):
        side = rng.choice([-1.0, 1.0])
        items.append((rng.uniform(0.15, 1.0), "person", side * (g["road"] + rng.uniform(0.2, 0.8) * g["walk"])))
    for _ in range(rng.integers(0, 4)):
        side = rng.choice([-1.0, 1.0])
        items.append((rng.uniform(0.1, 0.9), "pole", side * (g["road"] + 0.85 * g["walk"])))
    items.sort(key=lambda it: it[0])
    draw = cv.draw()
    for s, kind, d in items:
        y = g["y_h"] + s * (h - g["y_h"])
        x = g["x_v"] + d * s
        if kind == "car":
            cw, ch = 0.36 * w * s, 0.36 * w * s * rng.uniform(0.45, 0.65)
            body = cv.new(CAR, "car")
            draw.rounded_rectangle([x - cw / 2, y - ch, x + cw / 2, y], radius=max(1, int(ch / 5)), fill=body)
            draw.rectangle([x - cw * 0.38, y - ch * 0.92, x + cw * 0.38, y - ch * 0.6], fill=cv.new(CAR, "glass"))
            wheel = cv.new(CAR, "wheel")
            for wx in (x - cw * 0.32, x + cw * 0.32):
                draw.ellipse([wx - ch * 0.16, y - ch * 0.25, wx + ch * 0.16, y + ch * 0.05], fill=wheel)
        elif kind == "person":
            ph = 0.7 * h * s
            pw = ph * 0.28
            draw.ellipse([x - pw / 2, y - ph * 0.82, x + pw / 2, y - ph * 0.3], fill=cv.new(PERSON, "clothes"))
            legs = cv.new(PERSON, "clothes")
            draw.rectangle([x - pw * 0.35, y - ph * 0.4, x + pw * 0.35, y], fill=legs)
            draw.ellipse([x - pw * 0.28, y - ph, x + pw * 0.28, y - ph * 0.8], fill=cv.new(PERSON, "skin"))
        else:
            ph, pw = 1.1 * h * s, max(1.0, 0.012 * w * s)
            draw.rectangle([x - pw / 2, y - ph, x + pw / 2, y], fill=cv.new(POLE, "pole"))
            if rng.random() < 0.6:
                sz = 0.06 * h * s + 1
                draw.rectangle([x - sz, y - ph * 0.95, x + sz, y - ph * 0.95 + 1.5 * sz], fill=cv.new(SIGN, "sign"))
    cv.commit()


def _ego_vehicle(cv: _Canvas) -> None:
    """The camera car's bonnet at the bottom edge, void in Cityscapes."""
    h, w = cv.h, cv.w
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    depth = cv.rng.uniform(0.05, 0.09) * h
    bonnet = ys > h - depth * (1.0 - ((xs - w / 2) / (0.75 * w)) ** 2)
    cv.inst = np.where(bonnet, cv.new(EGO_VEHICLE, "", color=(30, 32, 35)), cv.inst).astype(np.uint8)


def _value_noise(rng: np.random.Generator, w: int, h: int, cell: float) -> np.ndarray:
    """Smooth random field in [-1, 1]: a coarse uniform grid upsampled bilinearly."""
    gw, gh = max(2, int(np.ceil(w / cell)) + 1), max(2, int(np.ceil(h / cell)) + 1)
    grid = Image.fromarray(rng.uniform(-1, 1, (gh, gw)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((w, h), Image.BILINEAR), dtype=np.float64)


def _render(cv: _Canvas, g: Dict[str, float], seg_inst: np.ndarray) -> np.ndarray:
    """Colour the instance map with the domain's shading, texture and camera effects."""
    rng, w, h, dom = cv.rng, cv.w, cv.h, cv.domain
    labels = np.asarray(cv.labels)[cv.inst]
    img = np.asarray(cv.colors, dtype=np.float64)[cv.inst]  # H x W x 3
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)

    sky = labels == SKY
    img[sky] *= (0.85 + 0.25 * np.clip(ys / max(g["y_h"], 1.0), 0, 1))[sky][:, None]  # brighter at horizon
    # window grid on buildings: per-instance period and phase, looked up per pixel
    n_inst = len(cv.labels)
    period = rng.uniform(5, 10, n_inst) * w / 256
    phase = rng.uniform(0, 10, n_inst)
    is_bld = labels == BUILDING
    wx = np.mod(xs + phase[cv.inst], period[cv.inst]) < 0.45 * period[cv.inst]
    wy = np.mod(ys + 2 * phase[cv.inst], 1.3 * period[cv.inst]) < 0.5 * period[cv.inst]
    window = is_bld & wx & wy & np.isin(cv.inst, seg_inst)
    img[window] = 0.35 * img[window] + 0.65 * np.asarray(dom.palette["window"][0], dtype=np.float64)

    tex = dom.smooth_tex * (_value_noise(rng, w, h, 24 * w / 256) + 0.5 * _value_noise(rng, w, h, 8 * w / 256))
    img += tex[..., None]
    if dom.grain_tex > 0:
        amp = GRAIN_BY_LABEL[np.asarray(cv.labels)]
        grain = _value_noise(rng, w, h, 2 * w / 256) + 0.6 * rng.uniform(-1, 1, (h, w))
        img += (dom.grain_tex * amp[cv.inst] * grain)[..., None]
    if rng.random() < dom.shadows:  # a building's shadow across the street
        edge = g["x_v"] + rng.uniform(-0.6, 0.6) * w * np.clip((ys - g["y_h"]) / (h - g["y_h"]), 0, 1)
        shade = ((xs < edge) if rng.random() < 0.5 else (xs > edge)) & (ys > g["y_h"]) & ~sky
        img[shade] *= rng.uniform(0.5, 0.75)

    img *= (1.0 + rng.normal(0.0, dom.white_balance, 3)) * rng.uniform(*dom.exposure)
    if dom.vignette > 0:
        r2 = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2
        img *= (1.0 - dom.vignette * r2 / 2)[..., None]
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(*dom.gamma)
    img = 128.0 + (img - 128.0) * rng.uniform(*dom.contrast)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")
    if dom.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(dom.blur * w / 256))
    arr = np.asarray(out, dtype=np.float64)
    if dom.noise > 0:
        arr = arr + rng.normal(0.0, dom.noise, arr.shape)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def render_scene(seed: Sequence[int], size: Tuple[int, int], domain: Domain) -> Tuple[np.ndarray, np.ndarray]:
    """One random street scene: (H x W x 3 uint8 image, H x W uint8 Cityscapes label ids)."""
    w, h = size
    rng = np.random.default_rng(list(seed))
    cv = _Canvas(w, h, domain, rng)
    cv.inst[:] = cv.new(SKY, "sky")
    g = _scene_geometry(rng, w, h, domain)
    seg_inst = _skyline(cv, g)
    _ground(cv, g)
    _objects(cv, g)
    if domain.ego_vehicle:
        _ego_vehicle(cv)
    img = _render(cv, g, seg_inst)
    return img, np.asarray(cv.labels, dtype=np.uint8)[cv.inst]


def _save_png(array: np.ndarray, path: str, mode: Optional[str] = None, palette: Optional[np.ndarray] = None) -> None:
    """Write a PNG atomically (temporary name, then rename), optionally as a palette image."""
    img = Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)
    if palette is not None:
        img.putpalette(palette.reshape(-1).tolist())
    atomic_write(path, lambda f: img.save(f, format="PNG"))


def write_source(root: str, n: int, size: Tuple[int, int], seed: int) -> None:
    """GTA5 layout: images/, labels/ (palette PNGs of label ids) and split.mat."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    for i in range(1, n + 1):
        img, lbl = render_scene((seed, 0, i), size, GAME)
        name = f"{i:05d}.png"
        _save_png(img, os.path.join(root, "images", name))
        _save_png(lbl, os.path.join(root, "labels", name), mode="P", palette=LABEL_ID_COLORS)
    n_val = n_test = n // 10
    ids = np.arange(1, n + 1, dtype=np.int32).reshape(-1, 1)
    sio.savemat(os.path.join(root, "split.mat"), {
        "trainIds": ids[:n - n_val - n_test], "valIds": ids[n - n_val - n_test:n - n_test],
        "testIds": ids[n - n_test:]})


def write_target(root: str, split: str, n: int, size: Tuple[int, int], seed: int) -> None:
    """Cityscapes layout for one split: leftImg8bit/ and gtFine/ (labelIds and color) by city."""
    cities = TRAIN_CITIES if split == "train" else VAL_CITIES
    split_code = 1 if split == "train" else 2
    for i in range(n):
        city = cities[i % len(cities)]
        stem = f"{city}_{i // len(cities):06d}_000019"
        img_dir = os.path.join(root, "leftImg8bit", split, city)
        gt_dir = os.path.join(root, "gtFine", split, city)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(gt_dir, exist_ok=True)
        img, lbl = render_scene((seed, split_code, i), size, PHOTO)
        _save_png(img, os.path.join(img_dir, f"{stem}_leftImg8bit.png"))
        _save_png(lbl, os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"), mode="L")
        _save_png(LABEL_ID_COLORS[lbl], os.path.join(gt_dir, f"{stem}_gtFine_color.png"))


def generate(out: str, n_source: int = 200, n_target_train: int = 200, n_target_val: int = 60,
             size: Tuple[int, int] = (256, 128), seed: int = 0) -> bool:
    """Write both datasets under `out` unless a complete set with these parameters is there.

    Returns True when files were written, False when the existing set was reused.
    """
    params = {"n_source": n_source, "n_target_train": n_target_train, "n_target_val": n_target_val,
              "size": list(size), "seed": seed, "version": VERSION}
    marker = os.path.join(out, MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            if json.load(f) == params:
                logger.info("synthetic data already complete in %s (delete %s to regenerate)", out, marker)
                return False
        logger.info("synthetic data in %s was made with other parameters: regenerating", out)
        for sub in (SOURCE_DIR, TARGET_DIR):  # only the folders this generator writes
            shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
        os.remove(marker)
    os.makedirs(out, exist_ok=True)
    write_source(os.path.join(out, SOURCE_DIR), n_source, size, seed)
    write_target(os.path.join(out, TARGET_DIR), "train", n_target_train, size, seed)
    write_target(os.path.join(out, TARGET_DIR), "val", n_target_val, size, seed)
    # the marker appears only once every file is written
    atomic_write(marker, lambda f: f.write(json.dumps(params).encode()))
    logger.info("wrote %d source and %d + %d target scenes of %dx%d to %s",
                n_source, n_target_train, n_target_val, size[0], size[1], out)
    return True


def _size(text: str) -> Tuple[int, int]:
    """Parse 'W,H'."""
    try:
        w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected W,H (two integers), got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"images must be at least 16x16, got {text!r}")
    return w, h


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: python -m proda.demo.synthetic --out demo/data [...]"""
    p = argparse.ArgumentParser(description="Write the synthetic GTA5-style source and Cityscapes-style target sets.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (gets GTA5/ and cityscapes/)")
    p.add_argument("--n_source", type=int, default=200)
    p.add_argument("--n_target_train", type=int, default=200)
    p.add_argument("--n_target_val", type=int, default=60)
    p.add_argument("--size", type=_size, default=(256, 128), help="W,H of every image")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    generate(args.out, args.n_source, args.n_target_train, args.n_target_val, args.size, args.seed)


if __name__ == "__main__":
    main()
