"""Drawing the synthetic radiographs of cxrfast.data.synth: numpy only, float32, vectorised.

An image is an attenuation map A (0 air … ~0.5 soft tissue and fluid … ~0.9 metal) on anatomical
coordinates (u, v) ∈ [-1, 1]²: u left → right of the image, v top → bottom. The patient's right is on the
image's left in frontal views (radiological convention), so the "right" lung has u < 0. Each image maps
pixels to (u, v) through its own small rotation, scale and shift (positioning jitter).

draw_frontal / draw_lateral take the study's anatomy and findings (plain dicts sampled by
cxrfast.data.synth, shared by every view of the study, so that findings agree across views) and the
image's own random generator (jitter, texture, noise), and return A and, for frontal views, the region
mask of each drawn finding plus the lung fields and heart.

How each finding looks (frontal):
- Cardiomegaly: the heart's width over the thorax's (cardiothoracic ratio, CTR) is 0.53–0.68 instead of
  0.37–0.47; AP views magnify the heart by 8%. Mask: the heart.
- Pleural Effusion: fluid density fills the base of the hemithorax up to a meniscus that climbs the lateral
  chest wall, blunting the costophrenic angle and hiding the hemidiaphragm; one or both sides, small /
  moderate / large (about 10 / 20 / 35% of the lung height). Mask: the fluid inside the lung field.
- Consolidation: a dense (or patchy) opacity made of overlapping blobs, cut to a lobe (the horizontal fissure
  gives the right upper lobe its sharp lower edge), sometimes with air bronchograms (dark branching tubes).
  Mask: the opacity.
- Atelectasis: linear / plate-like bands near the bases (or mid-lung), with volume loss (a raised
  hemidiaphragm and the mediastinum shifted toward the side) when the report says so. Mask: the bands.
- Edema: a bilateral perihilar ("bat-wing") haze, denser with severity, with Kerley B lines (short horizontal
  lines at the lateral lung bases) when moderate or severe. Mask: the dense part of the haze in the lungs.
- Support Devices: radiopaque lines (endotracheal tube, central venous catheter, enteric tube) and a
  pacemaker box with its leads. Mask: the devices.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["draw_frontal", "draw_lateral", "LOBES"]

F32 = np.float32
SOFT, FLUID, LUNG = 0.44, 0.5, 0.12  # densities: chest wall, fluid / heart / consolidation, aerated lung
CARINA = -0.2  # where the trachea divides (v)
CM = 0.043  # one centimetre in (u, v) units: the thorax (about 1.3 wide) is about 30 cm

# lobe -> (side, v range, |u| range as fractions of the lung's half-width from its centre, fissure)
LOBES = {
    "right upper lobe": ("right", (-0.75, -0.12), None),
    "right middle lobe": ("right", (-0.12, 0.32), "medial"),
    "right lower lobe": ("right", (0.02, 0.55), None),
    "left upper lobe": ("left", (-0.75, -0.05), None),
    "lingula": ("left", (-0.05, 0.32), "medial"),
    "left lower lobe": ("left", (0.05, 0.6), None),
}


def _ramp(x):
    """A smooth-enough step: 0 below -0.5, 1 above 0.5, linear between (x in units of the edge width)."""
    return np.clip(x + F32(0.5), F32(0.0), F32(1.0))


@functools.lru_cache(maxsize=4)
def _base_grid(size: int):
    c = (np.arange(size, dtype=F32) + F32(0.5)) / F32(size / 2) - F32(1.0)
    return c


@functools.lru_cache(maxsize=2)
def _noise_bank(size: int) -> np.ndarray:
    """Unit Gaussian noise [2 size, 2 size] drawn once per process from a fixed seed; each image takes a
    window at a random offset (a fresh draw per image costs more than the rest of the drawing)."""
    return np.random.default_rng(12345).standard_normal((2 * size, 2 * size), dtype=F32)


@functools.lru_cache(maxsize=2)
def _texture_bank(size: int) -> np.ndarray:
    """Smooth noise [2 size, 2 size] (features ~size/24), for lung markings and soft-tissue mottle."""
    rng = np.random.default_rng(54321)
    n = 2 * size
    coarse = rng.standard_normal((n // 12 + 2, n // 12 + 2)).astype(F32)
    t = np.linspace(0, coarse.shape[0] - 1.001, n, dtype=F32)
    i = t.astype(np.int64)
    f = t - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    out = rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]
    return (out / out.std()).astype(F32)


class Canvas:
    """Pixel grid of one image and its map to anatomical coordinates (rotation `angle` in radians, `scale`,
    shift (du, dv)); windows over anatomical boxes so that local structures are drawn on slices only."""

    def __init__(self, size: int, angle: float, scale: float, du: float, dv: float):
        self.size = size
        c = _base_grid(size)
        x, y = c[None, :], c[:, None]
        ca, sa = F32(np.cos(angle) / scale), F32(np.sin(angle) / scale)
        self.u = ca * (x - F32(du)) + sa * (y - F32(dv))
        self.v = -sa * (x - F32(du)) + ca * (y - F32(dv))
        self.params = (angle, scale, du, dv)

    def window(self, u0, u1, v0, v1):
        """(rows, cols) slices covering the anatomical box [u0, u1] x [v0, v1]."""
        angle, scale, du, dv = self.params
        ca, sa = np.cos(angle) * scale, np.sin(angle) * scale
        us, vs = np.array([u0, u1, u0, u1]), np.array([v0, v0, v1, v1])
        x = ca * us - sa * vs + du  # inverse map
        y = sa * us + ca * vs + dv
        half = self.size / 2
        c0, c1 = int(np.floor((x.min() + 1) * half)) - 2, int(np.ceil((x.max() + 1) * half)) + 2
        r0, r1 = int(np.floor((y.min() + 1) * half)) - 2, int(np.ceil((y.max() + 1) * half)) + 2
        clamp = lambda a: min(max(a, 0), self.size)  # noqa: E731
        return slice(clamp(r0), clamp(r1)), slice(clamp(c0), clamp(c1))

    def local(self, box):
        sl = self.window(*box)
        return sl, self.u[sl], self.v[sl]


@functools.lru_cache(maxsize=1)
def _angular_noise() -> np.ndarray:
    """Smooth 1-D noise (4096 samples, features ~8 samples), rectified: the vessel pattern around a hilum."""
    rng = np.random.default_rng(777)
    coarse = rng.standard_normal(4096 // 8 + 2).astype(F32)
    t = np.arange(4096, dtype=F32) / F32(8)
    i = t.astype(np.int64)
    f = t - i
    line = coarse[i] * (1 - f) + coarse[i + 1] * f
    return np.maximum(line, 0).astype(F32)


def _vessels(theta, r, rng):
    """Vessel-like streaks: noise along the angle around the hilum, bent a little with the distance, so
    that streaks radiate and wander."""
    noise = _angular_noise()
    offset = F32(rng.uniform(0, 4096))
    # about 70 streaks around the hilum (a feature every 8 samples over 560 samples per turn)
    idx = (theta * F32(560 / (2 * np.pi)) + F32(6) * np.sin(F32(9) * r) + offset).astype(np.int64)
    return noise[idx & 4095]


def _segment_distance(u, v, p, q):
    """Distance of every (u, v) to the segment p-q."""
    pu, pv = F32(p[0]), F32(p[1])
    du, dv = F32(q[0] - p[0]), F32(q[1] - p[1])
    n2 = du * du + dv * dv
    t = np.clip(((u - pu) * du + (v - pv) * dv) / max(n2, F32(1e-12)), 0, 1)
    return np.hypot(u - pu - t * du, v - pv - t * dv)


def _polyline(canvas: Canvas, points, width: float, margin: float = 0.02):
    """(slices, coverage in [0, 1]) of a polyline of the given full width, drawn on its bounding box."""
    pts = np.asarray(points, np.float64)
    box = (pts[:, 0].min() - width - margin, pts[:, 0].max() + width + margin,
           pts[:, 1].min() - width - margin, pts[:, 1].max() + width + margin)
    sl, u, v = canvas.local(box)
    d = None
    for p, q in zip(pts[:-1], pts[1:]):
        dd = _segment_distance(u, v, p, q)
        d = dd if d is None else np.minimum(d, dd)
    edge = F32(2.0 / canvas.size)  # about one pixel
    return sl, _ramp((F32(width / 2) - d) / edge)


def _blend(A, sl, alpha, target=FLUID):
    """A[sl] moves toward `target` by alpha (0 .. 1)."""
    a = A[sl]
    a += alpha * (F32(target) - a)


def _sides(anatomy, shift):
    """Per-side lung geometry: centre u, half-width, centre v, half-height, dome level."""
    lw, lh = anatomy["lung_w"], anatomy["lung_h"]
    out = {}
    for side, s in (("right", -1.0), ("left", 1.0)):
        out[side] = dict(s=s, cx=s * 0.37 * lw + shift, ax=0.29 * lw, cy=0.02, ay=0.70 * lh,
                         dome=anatomy["dome_" + side])
    return out


# --------------------------------------------------------------------------------------------------
# frontal


def draw_frontal(anatomy: dict, findings: dict, view: str, rng: np.random.Generator, size: int):
    """(A float32 [size, size], masks {name: bool [size, size]}) of a PA or AP view."""
    cv = Canvas(size, rng.normal(0, 0.035), rng.uniform(0.93, 1.03) * anatomy["scale"], rng.normal(0, 0.03),
                rng.normal(0.0, 0.03))
    u, v = cv.u, cv.v
    S = size
    ap = view == "AP"
    vol = findings.get("Atelectasis", {}).get("volume_loss")
    shift = {"right": -0.03, "left": 0.03}.get(vol, 0.0)  # mediastinum toward the collapsed side
    sides = _sides(anatomy, 0.0)
    if vol in ("right", "left"):
        sides[vol]["dome"] -= 0.07
    elif vol == "both":
        for g in sides.values():
            g["dome"] -= 0.04

    # --- soft tissue: torso narrowing toward the shoulders, thicker (denser) in the middle
    bw = F32(anatomy["body_w"])
    au = np.abs(u)
    width = bw * (F32(1) - F32(0.06) * (v - F32(0.3)) ** 2) - F32(0.5) * np.maximum(F32(-0.78) - v, 0)
    torso = _ramp((width - au) / F32(0.04))
    A = torso * (F32(SOFT - 0.1) + F32(0.14) * np.clip(F32(1) - (u / bw) ** 2, 0, 1))
    neck = _ramp((F32(0.2) - au) / F32(0.04)) * (v < F32(-0.6))
    np.maximum(A, neck * F32(SOFT), out=A)

    # --- lung fields (both sides at once: per-pixel side parameters)
    left = u > F32(shift)
    pick = lambda key: np.where(left, F32(sides["left"][key]), F32(sides["right"][key]))  # noqa: E731
    cx, ax, ay, dome = pick("cx"), pick("ax"), pick("ay"), pick("dome")
    cy = F32(0.02)
    # the hemithorax (below the diaphragm too): an ellipse whose apex is narrower than its base
    du_ = (u - cx) / (ax * (F32(0.88) + F32(0.12) * np.clip(v + F32(0.2), -1, 1)))
    ell = du_ ** 2 + ((v - cy) / ay) ** 2
    cage = _ramp((F32(1) - ell) * F32(6))
    dia = dome + F32(1.3) * (u - cx + np.where(left, F32(0.03), F32(-0.03))) ** 2
    above = _ramp((dia - v) / F32(0.012))
    medial = _ramp((np.abs(u - F32(shift)) - F32(0.085)) / F32(0.015))
    lungs = cage * above * medial

    # --- heart: a tilted ellipse left of the midline (apex down and to the patient's left) whose
    # horizontal extent over the thorax's is the cardiothoracic ratio
    ctr = anatomy["ctr"] * (1.08 if ap else 1.0)  # AP: the heart is farther from the detector, magnified
    thorax_w = 2 * (0.37 + 0.29) * anatomy["lung_w"]
    hw = ctr * thorax_w / 2  # half the heart's horizontal extent
    phi, ratio = -0.45, 0.72  # tilt of the long axis; short / long axis
    a_ = hw / np.sqrt(np.cos(phi) ** 2 + (ratio * np.sin(phi)) ** 2)
    b_ = ratio * a_
    hh = np.sqrt((a_ * np.sin(phi)) ** 2 + (b_ * np.cos(phi)) ** 2)
    hx = shift + 0.2 * hw
    hy = 0.5 * (anatomy["dome_right"] + anatomy["dome_left"]) - 0.5 * hh + 0.03
    sl_h, uh, vh = cv.local((hx - hw - 0.03, hx + hw + 0.03, hy - hh - 0.03, hy + hh + 0.03))
    cphi, sphi = F32(np.cos(phi)), F32(np.sin(phi))
    xh, yh = (uh - F32(hx)) * cphi + (vh - F32(hy)) * sphi, -(uh - F32(hx)) * sphi + (vh - F32(hy)) * cphi
    heart = np.zeros((S, S), F32)
    heart[sl_h] = _ramp((F32(1) - (xh / F32(a_)) ** 2 - (yh / F32(b_)) ** 2) * F32(8))
    lungs *= F32(1) - heart
    # mediastinum above the heart, aortic knob on the left
    med = _ramp((F32(0.075) + F32(0.03) * np.clip(v + F32(0.8), 0, 1) - np.abs(u - F32(shift * 0.7)))
                / F32(0.015)) * (v < F32(hy))
    lungs *= F32(1) - med
    knob = _ramp((F32(0.06) - np.hypot(u - F32(shift + 0.11), v + F32(0.3))) / F32(0.015))
    lungs *= F32(1) - knob

    # --- lung markings: vessels radiating from the hila, fading toward the periphery
    hu = u - np.where(left, F32(shift + 0.16), F32(shift - 0.16))
    hv = v + F32(0.02)
    r = np.hypot(hu, hv)
    hilum = np.exp(-(r * r) / F32(0.012))
    vessels = _vessels(np.arctan2(hv, hu), r, rng) * np.exp(-r / F32(0.3)) * (F32(1) - hilum)
    nb = _texture_bank(S)
    oy, ox = rng.integers(0, S, 2)
    tex = nb[oy:oy + S, ox:ox + S]
    lung_density = F32(LUNG) + F32(0.015) * tex + F32(0.09) * vessels + F32(0.12) * hilum
    A += lungs * (lung_density - A)

    # --- findings that change the lungs (blend toward fluid density inside the hemithorax)
    masks = {}
    lung_field = lungs > F32(0.5)
    if "Pleural Effusion" in findings:
        f = findings["Pleural Effusion"]
        fluid = np.zeros((S, S), F32)
        for side, h in f["heights"].items():
            g = sides[side]
            s = g["s"]
            lat = np.clip((np.abs(u - F32(g["cx"])) / F32(g["ax"])) * (np.sign(u - F32(g["cx"])) == s), 0, 1)
            level = F32(g["dome"] + 0.08 - h) - F32(0.6 * h) * lat ** 2
            side_mask = (u > F32(shift)) if side == "left" else (u <= F32(shift))
            depth = _ramp((v - level) / F32(0.04)) * side_mask
            fluid = np.maximum(fluid, depth * cage * medial)
        alpha = fluid * F32(f["density"])
        A += alpha * (F32(FLUID) - A)
        masks["Pleural Effusion"] = (fluid > 0.5) & lung_field
    if "Consolidation" in findings:
        alpha, m = _consolidation(cv, findings["Consolidation"], sides, lungs, left)
        A += alpha * (F32(FLUID - 0.03) - A)
        masks["Consolidation"] = m
    if "Atelectasis" in findings:
        alpha, m = _atelectasis(cv, findings["Atelectasis"], sides, lungs, left)
        A += alpha * (F32(FLUID - 0.04) - A)
        masks["Atelectasis"] = m
    if "Edema" in findings:
        e = findings["Edema"]
        haze = np.exp(-(((au - F32(0.16)) / F32(0.30)) ** 2 + ((v - F32(0.0)) / F32(0.36)) ** 2))
        patch = np.clip(F32(1.0) + F32(0.35) * tex, 0, 2)
        alpha = lungs * haze * patch * F32(e["density"])
        if e.get("kerley"):
            alpha = np.maximum(alpha, _kerley(cv, e, sides) * lungs)
        A += alpha * (F32(FLUID) - A)
        masks["Edema"] = (haze * lungs > F32(0.4))

    # --- bones: posterior ribs (arcs, highest a little lateral to the spine), fainter anterior ribs
    # (descending toward the midline), clavicles, spine
    mu = np.abs(u - F32(shift))
    gap = F32(anatomy["rib_gap"])
    inside = cage * above * (v > F32(-0.85))
    post = (v + F32(0.55) + F32(0.25) * mu - F32(0.75) * mu * mu) / gap
    ant = (v + F32(0.3) + F32(0.45) * mu) / (gap * F32(1.25))
    ribs = _ramp((np.cos(F32(2 * np.pi) * post) - F32(0.55)) * F32(2.5)) * F32(0.06) + \
        _ramp((np.cos(F32(2 * np.pi) * ant) - F32(0.6)) * F32(2.5)) * F32(0.025) * (mu > F32(0.15))
    A += ribs * inside
    for s in (-1.0, 1.0):
        sl, uc, vc = cv.local((min(s * 0.07, s * 0.65), max(s * 0.07, s * 0.65), -0.9, -0.35))
        t = np.abs(uc - F32(shift))
        line = F32(-0.66 + anatomy["clav"]) + F32(0.12) * (t - F32(0.07)) - F32(0.25) * (t - F32(0.07)) * (t - F32(0.35)) * (t - F32(0.6))
        band = _ramp((F32(0.026) - np.abs(vc - line)) / F32(0.012)) * _ramp((F32(0.58) - t) / F32(0.03)) * (uc * s > 0)
        A[sl] += band * F32(0.09)
    sl, us, vs = cv.local((shift - 0.09, shift + 0.09, -1.0, 1.0))
    spine = _ramp((F32(0.05) - np.abs(us - F32(shift))) / F32(0.015))
    A[sl] += spine * (F32(0.02) + F32(0.008) * np.cos(F32(2 * np.pi / 0.12) * vs))
    A += heart * (F32(FLUID) - A) * F32(0.85)  # the heart over the spine, still showing it faintly
    # trachea: air in the upper mediastinum
    sl, ut, vt = cv.local((shift - 0.06, shift + 0.06, -1.0, -0.15))
    A[sl] -= _ramp((F32(0.026) - np.abs(ut - F32(shift * 0.5))) / F32(0.01)) * (vt < F32(CARINA)) * F32(0.12)

    if "Support Devices" in findings:
        dev = _devices(cv, findings["Support Devices"], shift, hx, hy)
        A += dev * F32(0.55)
        masks["Support Devices"] = dev > 0.2  # thin lines: a generous threshold keeps them whole
    if "Cardiomegaly" in findings:
        masks["Cardiomegaly"] = heart > 0.5
    masks["lungs"] = lung_field
    masks["heart"] = heart > 0.5
    return A, masks


def _blob_field(u, v, blobs):
    """Sum of Gaussian blobs [(centre u, centre v, radius)]: thresholded, an irregular opacity."""
    field = np.zeros(u.shape, F32)
    for pu, pv, r in blobs:
        field += np.exp(-((u - F32(pu)) ** 2 + (v - F32(pv)) ** 2) / F32(r * r))
    return field


def _band(u, v, cu, cv_, length, thick, angle):
    """(coverage of an elliptic band of half-length `length` and half-thickness `thick` at (cu, cv_) tilted
    by `angle`, its along / across coordinates x, y)."""
    ca, sa = F32(np.cos(angle)), F32(np.sin(angle))
    x, y = (u - F32(cu)) * ca + (v - F32(cv_)) * sa, -(u - F32(cu)) * sa + (v - F32(cv_)) * ca
    return _ramp((F32(1) - (x / F32(length)) ** 2 - (y / F32(thick)) ** 2) * F32(3)), x, y


def _visible_box(cv: Canvas, lungs, on_side, u0, u1, v0, v1):
    """The box (u0, u1, v0, v1) shrunk to the lung pixels it holds (5th-95th percentiles), so that what is
    placed in it lands on visible lung whatever the heart's size; the box itself if it holds none."""
    sl = cv.window(u0, u1, v0, v1)
    u, v = cv.u[sl], cv.v[sl]
    pick = (lungs[sl] > 0.5) & on_side[sl] & (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)
    if pick.sum() < 4:
        return u0, u1, v0, v1
    pu, pv = u[pick], v[pick]
    (a, b), (c, d) = np.percentile(pu, (5, 95)), np.percentile(pv, (5, 95))
    return float(a), float(b), float(c), float(d)


def _consolidation(cv: Canvas, c: dict, sides: dict, lungs, on_left):
    """A lobe's opacity: blobs placed (as fractions) in the visible part of the lobe's box, cut at the
    lobe's upper and lower limits (a fissure makes a sharp edge), sometimes with air bronchograms."""
    side, (v0, v1), where = LOBES[c["lobe"]]
    g = sides[side]
    s = g["s"]
    u0, u1 = sorted((g["cx"] - s * g["ax"] * 1.1, g["cx"] + s * g["ax"] * 1.1))
    if where == "medial":
        u0, u1 = sorted((g["cx"] - s * g["ax"] * 1.1, g["cx"] + s * g["ax"] * 0.3))
    on_side = on_left if side == "left" else ~on_left
    bu0, bu1, bv0, bv1 = _visible_box(cv, lungs, on_side, u0, u1, v0, v1)
    S = cv.size
    sl, u, v = cv.local((u0 - 0.1, u1 + 0.1, v0, v1))
    # blob centres as fractions of the visible box
    field = _blob_field(u, v, [(bu0 + bx * (bu1 - bu0), bv0 + by * (bv1 - bv0), br) for bx, by, br in c["blobs"]])
    inside = _ramp((F32(1) - np.abs(v - F32((v0 + v1) / 2)) / F32((v1 - v0) / 2)) * F32(40))
    body = _ramp((field - F32(0.55)) * F32(6)) * inside
    alpha = np.zeros((S, S), F32)
    alpha[sl] = body * lungs[sl] * on_side[sl] * F32(c["density"])
    if c.get("bronchograms"):
        for b in c["branches"]:
            seg = _segment_distance(u, v, (bu0 + b[0] * (bu1 - bu0), bv0 + b[1] * (bv1 - bv0)),
                                    (bu0 + b[2] * (bu1 - bu0), bv0 + b[3] * (bv1 - bv0)))
            alpha[sl] *= F32(1) - F32(0.55) * _ramp((F32(0.007) - seg) / F32(0.004)) * (body > 0.7)
    return alpha, alpha > F32(0.3 * c["density"])


def _atelectasis(cv: Canvas, a: dict, sides: dict, lungs, on_left):
    """Bands (linear / plate-like / subsegmental) with a faint haze around them, centred at a fraction of
    the visible lung's width at their height (so a large heart does not hide them)."""
    S = cv.size
    alpha = np.zeros((S, S), F32)
    for side, du, dv, length, thick, angle in a["bands"]:
        g = sides[side]
        s = g["s"]
        cvv = g["dome"] + dv  # dv < 0: above the dome
        on_side = on_left if side == "left" else ~on_left
        lo, hi = sorted((g["cx"] - s * g["ax"] * 1.1, g["cx"] + s * g["ax"] * 1.1))
        bu0, bu1, _, _ = _visible_box(cv, lungs, on_side, lo, hi, cvv - 0.02, cvv + 0.02)
        t = (du + 0.3) / 0.8  # du in [-0.3, 0.5]: from the medial to the lateral part of the visible span
        cu = bu0 + (t if s > 0 else 1 - t) * (bu1 - bu0)
        r = 1.4 * length + 4 * thick + 0.06
        sl, u, v = cv.local((cu - r, cu + r, cvv - r, cvv + r))
        band, x, y = _band(u, v, cu, cvv, length, thick, angle)
        haze = np.exp(-(x / F32(1.3 * length)) ** 2 - (y / F32(4 * thick + 0.03)) ** 2) * F32(0.4)
        np.maximum(alpha[sl], np.maximum(band, haze) * on_side[sl] * F32(a["density"]), out=alpha[sl])
    alpha *= lungs
    return alpha, alpha > F32(0.35 * a["density"])


def _kerley(cv: Canvas, e: dict, sides: dict):
    S = cv.size
    out = np.zeros((S, S), F32)
    for side, du, dv, length in e["kerley"]:
        g = sides[side]
        edge_u = g["cx"] + g["s"] * g["ax"] * du
        p, q = (edge_u, g["dome"] + dv), (edge_u - g["s"] * length, g["dome"] + dv + 0.004)
        sl, cover = _polyline(cv, [p, q], 0.007)
        np.maximum(out[sl], cover * F32(0.55), out=out[sl])
    return out


def _devices(cv: Canvas, d: dict, shift: float, hx: float, hy: float):
    S = cv.size
    out = np.zeros((S, S), F32)
    lines = []
    for kind in d["devices"]:
        if kind == "ett":
            tip = CARINA - d["ett_cm"] * CM
            lines.append(([(shift * 0.5 - 0.01, -1.02), (shift * 0.5, -0.6), (shift * 0.5, tip)], 0.012))
        elif kind == "cvc":
            lines.append(([(-0.34, -1.02), (-0.22, -0.78), (-0.08 + shift, -0.58), (-0.05 + shift, d["cvc_tip"])],
                          0.008))
        elif kind == "ngt":
            lines.append(([(shift * 0.5 + 0.01, -1.02), (shift * 0.5 + 0.02, -0.2), (0.06, 0.45), (0.3, 0.62),
                           (0.38, 0.7)], 0.01))
        elif kind == "pacemaker":
            box = (0.42, 0.58, -0.68, -0.57)
            sl, u, v = cv.local(box)
            out[sl] = np.maximum(out[sl], _ramp((F32(0.07) - np.abs(u - F32(0.5))) / F32(0.008))
                                 * _ramp((F32(0.045) - np.abs(v + F32(0.625))) / F32(0.008)))
            lines.append(([(0.45, -0.6), (0.2, -0.55), (hx - 0.05, hy - 0.15), (hx - 0.1, hy + 0.05)], 0.007))
    for pts, w in lines:
        sl, cover = _polyline(cv, pts, w)
        np.maximum(out[sl], cover, out=out[sl])
    return out


# --------------------------------------------------------------------------------------------------
# lateral


def draw_lateral(anatomy: dict, findings: dict, rng: np.random.Generator, size: int):
    """A float32 [size, size] of a lateral view: anterior on the left, the spine posterior (right), the
    heart anterior and low against the diaphragm, both lungs superimposed, the hemidiaphragms sloping down
    to the posterior costophrenic sulci, the arms raised over the upper chest."""
    cv = Canvas(size, rng.normal(0, 0.035), rng.uniform(0.93, 1.03) * anatomy["scale"], rng.normal(0, 0.03),
                rng.normal(0.0, 0.03))
    u, v = cv.u, cv.v
    S = size
    depth = anatomy["depth"]
    body = _ramp((F32(1) - ((u - F32(0.02)) / F32(0.86 * depth)) ** 2 - ((v - F32(0.25)) / F32(1.4)) ** 2) * F32(6))
    A = body * (F32(SOFT - 0.04) + F32(0.09) * _ramp((F32(-0.5) - v) / F32(0.25)))  # arms over the apices
    dome = float(0.5 * (anatomy["dome_right"] + anatomy["dome_left"]))
    dia = F32(dome - 0.06) + F32(0.12) * (u + F32(0.1)) + F32(0.5) * (u + F32(0.1)) ** 2
    ell = ((u - F32(0.05)) / F32(0.6 * depth)) ** 2 + ((v + F32(0.02)) / F32(0.72 * anatomy["lung_h"])) ** 2
    cage = _ramp((F32(1) - ell) * F32(6))
    lungs = cage * _ramp((dia - v) / F32(0.015))
    # heart: anterior and low, a tilted ellipse growing with the CTR
    grow = anatomy["ctr"] - 0.42
    a_, b_ = 0.26 + 0.9 * grow, 0.2 + 0.5 * grow
    hx, hy = -0.24 + 0.3 * grow, dome - 0.12
    cphi, sphi = F32(np.cos(0.6)), F32(np.sin(0.6))
    x, y = (u - F32(hx)) * cphi + (v - F32(hy)) * sphi, -(u - F32(hx)) * sphi + (v - F32(hy)) * cphi
    heart = _ramp((F32(1) - (x / F32(a_)) ** 2 - (y / F32(b_)) ** 2) * F32(8))
    lungs *= F32(1) - heart
    hu, hv = u - F32(0.08), v + F32(0.05)
    r = np.hypot(hu, hv)
    hilum = np.exp(-(r * r) / F32(0.02))
    vessels = _vessels(np.arctan2(hv, hu), r, rng) * np.exp(-r / F32(0.3)) * (F32(1) - hilum)
    nb = _texture_bank(S)
    oy, ox = rng.integers(0, S, 2)
    tex = nb[oy:oy + S, ox:ox + S]
    # two lungs superimposed: denser than one
    A += lungs * (F32(LUNG + 0.07) + F32(0.1) * vessels + F32(0.12) * hilum + F32(0.015) * tex - A)
    if "Pleural Effusion" in findings:
        f = findings["Pleural Effusion"]
        h = max(f["heights"].values()) * (1.3 if len(f["heights"]) == 2 else 1.0)
        level = F32(dome + 0.14 - h) - F32(0.6 * h) * np.clip((u - F32(0.05)) / F32(0.5), 0, 1) ** 2
        fluid = _ramp((v - level) / F32(0.04)) * cage * (u > F32(-0.25))
        A += fluid * F32(f["density"]) * (F32(FLUID) - A)
    if "Consolidation" in findings:
        c = findings["Consolidation"]
        lobe = c["lobe"]
        px, py = (0.05, -0.35) if "upper" in lobe else (-0.2, 0.1) if lobe in ("right middle lobe", "lingula") \
            else (0.3, 0.22)
        field = _blob_field(u, v, [(px + (bx - 0.5) * 0.3, py + (by - 0.5) * 0.3, br) for bx, by, br in c["blobs"]])
        alpha = _ramp((field - F32(0.55)) * F32(6)) * lungs * F32(c["density"])
        A += alpha * (F32(FLUID - 0.03) - A)
    if "Atelectasis" in findings:
        a = findings["Atelectasis"]
        alpha = np.zeros((S, S), F32)
        for _, du, dv, length, thick, angle in a["bands"]:
            band = _band(u, v, 0.1 + 0.25 * du, dome + dv, length, thick, angle + 0.3)[0]
            np.maximum(alpha, band, out=alpha)
        A += alpha * lungs * F32(a["density"]) * (F32(FLUID - 0.04) - A)
    if "Edema" in findings:
        e = findings["Edema"]
        haze = np.exp(-(((u - F32(0.05)) / F32(0.35)) ** 2 + ((v - F32(0.0)) / F32(0.38)) ** 2))
        A += lungs * haze * F32(e["density"]) * (F32(FLUID) - A)
    # spine: vertebral bodies and discs, posterior; sternum: a thin band along the anterior chest wall
    spine_u = F32(0.6 * depth)
    sl, us, vs = cv.local((0.6 * depth - 0.15, 0.6 * depth + 0.15, -1.0, 1.0))
    tilt = us - spine_u + F32(0.06) * vs
    A[sl] += _ramp((F32(0.075) - np.abs(tilt)) / F32(0.015)) * (
        F32(0.04) + F32(0.05) * _ramp((np.cos(F32(2 * np.pi / 0.13) * vs) + F32(0.5)) * F32(2)))
    sl, us, vs = cv.local((-0.75 * depth - 0.1, -0.45 * depth, -0.75, 0.35))
    A[sl] += _ramp((F32(0.018) - np.abs(us - F32(-0.62 * depth) - F32(0.08) * vs)) / F32(0.01)) * F32(0.07) * \
        (vs > F32(-0.7))
    A += heart * (F32(FLUID) - A) * F32(0.8)
    if "Support Devices" in findings:
        sl, cover = _polyline(cv, [(-0.2, -1.02), (-0.12, -0.3)], 0.011)
        A[sl] += cover * F32(0.5)
    return A


def upsample2(a: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling with pixel centres kept (float32 [h, w] -> [2h, 2w], edges clamped): the
    images are drawn at half resolution, which is four times cheaper and softens the drawn edges."""
    a = np.asarray(a, F32)

    def along0(x):
        prev = np.concatenate([x[:1], x[:-1]])
        nxt = np.concatenate([x[1:], x[-1:]])
        out = np.empty((2 * x.shape[0],) + x.shape[1:], F32)
        out[0::2] = F32(0.75) * x + F32(0.25) * prev
        out[1::2] = F32(0.75) * x + F32(0.25) * nxt
        return out

    return np.ascontiguousarray(along0(along0(a).T).T)


def expose(A: np.ndarray, exposure: dict, rng: np.random.Generator) -> np.ndarray:
    """Stored values (uint16, 12 bits) of the attenuation map: gain, offset, gamma, a soft exposure
    gradient and quantum noise (larger where more photons arrive: darker, in MONOCHROME2 terms)."""
    S = A.shape[0]
    nb = _noise_bank(S)
    oy, ox = rng.integers(0, S, 2)
    noise = nb[oy:oy + S, ox:ox + S]
    c = _base_grid(S)
    grad = F32(exposure["grad_x"]) * c[None, :] + F32(exposure["grad_y"]) * c[:, None]
    a = np.clip(A + grad, 0, 1.2) ** F32(exposure["gamma"])
    p = F32(exposure["offset"]) + F32(exposure["gain"]) * a
    p += noise * F32(exposure["noise"]) * np.sqrt(F32(1.25) - np.minimum(a, F32(1.2)))
    return np.clip(np.rint(p), 0, 4095).astype(np.uint16)
