"""A small vectorised numpy ray-caster: exact ground truth where no real data ships in packages.

Multi-view renders, depth, surface normals, instance/semantic masks and camera poses are all
read off one ray cast, so they agree with each other and with the camera to float precision.
Textures are the real bundled photos. Pure numpy, no I/O.

Conventions (used by every writer):
- world: right-handed, +Z up; the ground is z = 0.
- pixels: pixel-edge origin; pixel (row i, col j) covers x in [j, j+1), y in [i, i+1) and its
  ray passes through its centre (j + 0.5, i + 0.5).
- the OpenCV camera frame: x right, y down, z forward; `depth` is z in this frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np

NEAR = 1e-6  # hits closer than this along a ray are ignored (no self-hits at the origin)
_FLIP_YZ = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes <-> Blender camera axes
_FLIP_XY = np.diag([-1.0, -1.0, 1.0])  # OpenCV camera axes <-> PyTorch3D view axes


def unit(v: np.ndarray) -> np.ndarray:
    """Vectors scaled to unit length along the last axis."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def rows_times(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """`v @ m` for many 3-vectors (N, 3) and a (3, 3) or (3,) `m`, without BLAS: BLAS threads
    stall badly on such tiny inner dimensions whenever the CPU is shared."""
    v = np.asarray(v, dtype=np.float64)
    if m.ndim == 1:
        return v[:, 0] * m[0] + v[:, 1] * m[1] + v[:, 2] * m[2]
    out = np.empty((len(v), m.shape[1]))
    for k in range(m.shape[1]):
        column = out[:, k]
        np.multiply(v[:, 0], m[0, k], out=column)
        column += v[:, 1] * m[1, k]
        column += v[:, 2] * m[2, k]
    return out


def rotation_z(angle: float) -> np.ndarray:
    """Rotation about +Z by `angle` radians (objects standing on the ground turn about it)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_xyz(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rz @ Ry @ Rx: a general orientation from three angles in radians."""
    cx, sx, cy, sy = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry)
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    rot_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    return rotation_z(rz) @ rot_y @ rot_x


def texture_crop(photo: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of a photo (at most `size` px, downsampled by striding) as a texture."""
    h, w = photo.shape[:2]
    side = int(min(h, w, max(8, rng.integers(size // 2, 2 * size + 1))))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    step = max(1, side // size)
    return np.ascontiguousarray(photo[y0 : y0 + side : step, x0 : x0 + side : step])


def flat_texture(rgb: Sequence[int]) -> np.ndarray:
    """A one-pixel texture: a plain colour."""
    return np.asarray(rgb, dtype=np.uint8).reshape(1, 1, 3)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup, wrapping at the borders; uv in [0, 1) (u along columns, v down rows).
    float32 arithmetic and flat gathers: this is the hot loop of every render."""
    h, w = texture.shape[:2]
    x = uv[:, 0].astype(np.float32) * np.float32(w) - np.float32(0.5)
    y = uv[:, 1].astype(np.float32) * np.float32(h) - np.float32(0.5)
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[:, None]
    fy = (y - y0)[:, None]
    xi0 = x0.astype(np.int64) % w
    yi0 = (y0.astype(np.int64) % h) * w
    xi1 = xi0 + 1
    xi1[xi1 == w] = 0
    yi1 = yi0 + w
    yi1[yi1 == h * w] = 0
    flat = np.asarray(texture, dtype=np.float32).reshape(-1, 3)
    top = np.take(flat, yi0 + xi0, axis=0)
    right = np.take(flat, yi0 + xi1, axis=0)
    bottom = np.take(flat, yi1 + xi0, axis=0)
    corner = np.take(flat, yi1 + xi1, axis=0)
    right -= top
    right *= fx
    top += right
    corner -= bottom
    corner *= fx
    bottom += corner
    bottom -= top
    bottom *= fy
    top += bottom
    return top


def _as_texture(texture: np.ndarray) -> np.ndarray:
    """float32 (H, W, 3); an array that already is one is shared, not copied (render samples
    each distinct texture object once)."""
    texture = np.asarray(texture, dtype=np.float32)
    if texture.ndim != 3 or texture.shape[2] != 3:
        raise ValueError(f"texture must be (H, W, 3), got {texture.shape}")
    return texture


_CUBE = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)


def _sphere_surface(points: np.ndarray, centers: np.ndarray, rotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normals and (longitude, latitude) uv for points on spheres (per-point centre, rotation)."""
    normals = unit(points - centers)
    local = np.einsum("ni,nij->nj", normals, rotations)  # world -> object: R^T n
    u = 0.5 + np.arctan2(local[:, 1], local[:, 0]) / (2 * np.pi)
    v = np.arccos(np.clip(local[:, 2], -1.0, 1.0)) / np.pi
    return normals, np.stack([u, v], axis=1)


# -- primitives ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Sphere:
    """A textured sphere; `rotation` (object -> world) orients its spherical texture map."""

    center: np.ndarray
    radius: float
    texture: np.ndarray
    class_id: int = 0
    instance_id: int = 0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", np.asarray(self.center, dtype=np.float64).reshape(3))
        object.__setattr__(self, "radius", float(self.radius))
        object.__setattr__(self, "texture", _as_texture(self.texture))
        object.__setattr__(self, "rotation", np.asarray(self.rotation, dtype=np.float64).reshape(3, 3))

    def corners(self) -> np.ndarray:
        """The 8 corners of the bounding cube: their projection bounds the silhouette."""
        return self.center + self.radius * _CUBE

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Ray parameter of the first hit in front of the origin (inf where missed)."""
        oc = origin - self.center
        a = np.einsum("ij,ij->i", dirs, dirs)
        half_b = rows_times(dirs, oc)
        c = oc @ oc - self.radius**2
        disc = half_b * half_b - a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        near = (-half_b - root) / a
        far = (-half_b + root) / a
        t = np.where(near > NEAR, near, far)
        return np.where((disc >= 0) & (t > NEAR), t, np.inf)

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outward normals and spherical (longitude, latitude) texture coordinates."""
        return _sphere_surface(points, self.center[None], self.rotation[None])


@dataclass(frozen=True, eq=False)
class Box:
    """A textured oriented box; every face shows the texture once, upright on the side faces."""

    center: np.ndarray
    half_extents: np.ndarray
    rotation: np.ndarray
    texture: np.ndarray
    class_id: int = 0
    instance_id: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", np.asarray(self.center, dtype=np.float64).reshape(3))
        object.__setattr__(self, "half_extents", np.asarray(self.half_extents, dtype=np.float64).reshape(3))
        object.__setattr__(self, "rotation", np.asarray(self.rotation, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "texture", _as_texture(self.texture))

    def corners(self) -> np.ndarray:
        return self.center + (_CUBE * self.half_extents) @ self.rotation.T

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Slab test in the box frame."""
        o = (origin - self.center) @ self.rotation
        d = rows_times(dirs, self.rotation)
        d = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1 = (-self.half_extents - o) / d
        t2 = (self.half_extents - o) / d
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
        t = np.where(t_near > NEAR, t_near, t_far)
        return np.where((t_far >= t_near) & (t > NEAR), t, np.inf)

    # For the face whose normal is axis a: the texture's (u, v) axes, v pointing down the image.
    _FACE_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        local = rows_times(points - self.center, self.rotation)
        scaled = local / self.half_extents
        axis = np.argmax(np.abs(scaled), axis=1)
        rows = np.arange(len(points))
        sign = np.sign(scaled[rows, axis])
        normals_local = np.zeros_like(local)
        normals_local[rows, axis] = sign
        normals = rows_times(normals_local, self.rotation.T)
        uv = np.empty((len(points), 2))
        for a, (bu, bv) in self._FACE_AXES.items():
            on = axis == a
            uv[on, 0] = (np.clip(scaled[on, bu], -1, 1) + 1) / 2 * 0.999
            uv[on, 1] = (1 - np.clip(scaled[on, bv], -1, 1)) / 2 * 0.999
        return normals, uv


@dataclass(frozen=True, eq=False)
class Plane:
    """An infinite textured plane (the ground), the texture tiled every `tile` units."""

    point: np.ndarray
    normal: np.ndarray
    texture: np.ndarray
    class_id: int = 0
    instance_id: int = 0
    tile: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "point", np.asarray(self.point, dtype=np.float64).reshape(3))
        object.__setattr__(self, "normal", unit(np.asarray(self.normal, dtype=np.float64).reshape(3)))
        object.__setattr__(self, "texture", _as_texture(self.texture))

    def corners(self) -> None:
        return None  # unbounded: every ray is tested

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        denom = rows_times(dirs, self.normal)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((self.point - origin) @ self.normal) / denom
        return np.where(np.isfinite(t) & (t > NEAR), t, np.inf)

    def _tangents(self) -> tuple[np.ndarray, np.ndarray]:
        ref = np.array([0.0, 0.0, 1.0]) if abs(self.normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        first = unit(np.cross(ref, self.normal))
        return first, np.cross(self.normal, first)

    def surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first, second = self._tangents()
        rel = points - self.point
        uv = np.stack([rows_times(rel, first) / self.tile, rows_times(rel, second) / self.tile], axis=1) % 1.0
        return np.broadcast_to(self.normal, points.shape).copy(), uv


Primitive = Union[Sphere, Box, Plane]


# -- camera -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera: OpenCV world-to-camera `R`, `t` and intrinsics `K` (square pixels)."""

    R: np.ndarray
    t: np.ndarray
    K: np.ndarray
    width: int
    height: int

    @property
    def position(self) -> np.ndarray:
        """The camera centre C = -R^T t in world coordinates."""
        return -self.R.T @ self.t

    def intrinsics(self) -> np.ndarray:
        """K in pixels, pixel-edge origin: the image centre is (W/2, H/2)."""
        return self.K.copy()

    def blender_rt(self) -> np.ndarray:
        """(3, 4) [R | t] world-to-camera in Blender's camera axes (looks down -Z, +Y up),
        as Zero123's `get_3x4_RT_matrix_from_blender` writes it."""
        return np.concatenate([_FLIP_YZ @ self.R, (_FLIP_YZ @ self.t)[:, None]], axis=1)

    def pytorch3d(self) -> dict[str, list]:
        """CO3D's viewpoint: PyTorch3D R, T (X_view = X_world @ R + T; +X left, +Y up, +Z
        forward) and the NDC-isotropic focal length and principal point."""
        R = (_FLIP_XY @ self.R).T
        T = _FLIP_XY @ self.t
        half = np.array([self.width, self.height], dtype=np.float64) / 2.0
        rescale = half.min()
        focal = np.array([self.K[0, 0], self.K[1, 1]]) / rescale
        principal = (half - np.array([self.K[0, 2], self.K[1, 2]])) / rescale
        return {"R": R.tolist(), "T": T.tolist(), "focal_length": focal.tolist(),
                "principal_point": principal.tolist()}

    def rays(self) -> np.ndarray:
        """(H, W, 3) world directions through the pixel centres, scaled so that their camera-z
        component is 1: the ray parameter of a hit is then its depth."""
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        xs = (np.arange(self.width) + 0.5 - cx) / fx
        ys = (np.arange(self.height) + 0.5 - cy) / fy
        cam = np.empty((self.height, self.width, 3))
        cam[..., 0] = xs[None, :]
        cam[..., 1] = ys[:, None]
        cam[..., 2] = 1.0
        return rows_times(cam.reshape(-1, 3), self.R).reshape(cam.shape)  # R^T v for row vectors


def look_at(position: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0),
            fov_deg: float = 50.0, width: int = 256, height: int = 256) -> Camera:
    """A camera at `position` looking at `target`; `fov_deg` spans the longer image side
    (Blender's automatic sensor fit)."""
    position = np.asarray(position, dtype=np.float64)
    forward = unit(np.asarray(target, dtype=np.float64) - position)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-9:  # looking straight along `up`: any right vector will do
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right = unit(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    t = -R @ position
    focal = (max(width, height) / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    K = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    return Camera(R=R, t=t, K=K, width=int(width), height=int(height))


def project(camera: Camera, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> pixel-edge-origin image coordinates (N, 2) and depths z (N,)."""
    cam = rows_times(np.asarray(points_world, dtype=np.float64).reshape(-1, 3), camera.R.T) + camera.t
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = camera.K[0, 0] * cam[:, 0] / z + camera.K[0, 2]
        y = camera.K[1, 1] * cam[:, 1] / z + camera.K[1, 2]
    return np.stack([x, y], axis=1), z


# -- casting and rendering ----------------------------------------------------------------------
def _windows(camera: Camera, primitives: Sequence[Primitive]) -> list[tuple[int, int, int, int] | None]:
    """Per primitive, the pixel rows/cols (y0, y1, x0, x1) that can see it; None if none can.

    The projected corners of a bounding box enclose the silhouette of what is inside it, so only
    rays in that rectangle are tested: many small spheres (a mannequin) stay cheap.
    """
    full = (0, camera.height, 0, camera.width)
    windows: list[tuple[int, int, int, int] | None] = [full] * len(primitives)
    bounded = [k for k, p in enumerate(primitives) if not isinstance(p, Plane)]
    if not bounded:
        return windows
    xy, z = project(camera, np.concatenate([primitives[k].corners() for k in bounded]))
    xy, z = xy.reshape(-1, 8, 2), z.reshape(-1, 8)
    behind = z <= 1e-6
    with np.errstate(invalid="ignore"):
        lo = np.floor(np.nan_to_num(xy.min(axis=1))).astype(np.int64) - 1
        hi = np.ceil(np.nan_to_num(xy.max(axis=1))).astype(np.int64) + 1
    for row, k in enumerate(bounded):
        if behind[row].all():
            windows[k] = None
        elif behind[row].any():
            windows[k] = full
        else:
            x0, y0 = max(0, int(lo[row, 0])), max(0, int(lo[row, 1]))
            x1, y1 = min(camera.width, int(hi[row, 0])), min(camera.height, int(hi[row, 1]))
            windows[k] = (y0, y1, x0, x1) if x0 < x1 and y0 < y1 else None
    return windows


def cast(primitives: Sequence[Primitive], origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First hits of arbitrary rays: (t (N,), primitive index (N,), -1 where nothing is hit)."""
    origin = np.asarray(origin, dtype=np.float64)
    dirs = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
    best = np.full(len(dirs), np.inf)
    index = np.full(len(dirs), -1, dtype=np.int64)
    for k, primitive in enumerate(primitives):
        t = primitive.intersect(origin, dirs)
        closer = t < best
        best[closer] = t[closer]
        index[closer] = k
    return best, index


@dataclass(frozen=True, eq=False)
class Frame:
    """One rendered view; every map is exact for the same rays."""

    rgb: np.ndarray  # (H, W, 3) uint8
    alpha: np.ndarray  # (H, W) uint8, 255 where a primitive is hit
    depth: np.ndarray  # (H, W) float32 camera z, 0 where nothing is hit
    normals: np.ndarray  # (H, W, 3) float32 unit normals in the OpenCV camera frame, 0 where no hit
    instance: np.ndarray  # (H, W) int32 instance ids, 0 = background
    semantic: np.ndarray  # (H, W) int32 class ids, 0 = background
    primitive: np.ndarray  # (H, W) int32 index into the primitive list, -1 where no hit


def _background(background, height: int, width: int) -> np.ndarray:
    if background is None:
        return np.zeros((height, width, 3), np.float32)
    background = np.asarray(background, dtype=np.float32)
    if background.ndim == 1:
        return np.broadcast_to(background, (height, width, 3)).copy()
    return background.copy()


def _zbuffer(primitives: Sequence[Primitive], camera: Camera, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit per pixel: (ray parameter = depth, inf where missed; primitive index, -1)."""
    h, w = camera.height, camera.width
    origin = camera.position
    depth = np.full((h, w), np.inf)
    index = np.full((h, w), -1, dtype=np.int32)
    for k, (primitive, window) in enumerate(zip(primitives, _windows(camera, primitives))):
        if window is None:
            continue
        y0, y1, x0, x1 = window
        t = primitive.intersect(origin, rays[y0:y1, x0:x1].reshape(-1, 3)).reshape(y1 - y0, x1 - x0)
        region = depth[y0:y1, x0:x1]
        closer = t < region
        region[closer] = t[closer]
        index[y0:y1, x0:x1][closer] = k
    return depth, index


def _texture_ranks(primitives: Sequence[Primitive]) -> np.ndarray:
    """rank[k]: where primitive k falls when sorted by (texture object, k), so that primitives
    sharing a texture are consecutive."""
    first_seen: dict[int, int] = {}
    group = [first_seen.setdefault(id(p.texture), len(first_seen)) for p in primitives]
    order = sorted(range(len(primitives)), key=lambda k: (group[k], k))
    rank = np.empty(len(primitives), np.int64)
    rank[order] = np.arange(len(primitives))
    return rank


def _surfaces(primitives: Sequence[Primitive], prim: np.ndarray, points: np.ndarray,
              runs: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """World normals and texture uv at hit points grouped by primitive (`runs[k]`: the slice of
    primitive k); all spheres in one vectorised pass."""
    normals = np.empty_like(points)
    uv = np.empty((len(points), 2))
    is_sphere = np.array([isinstance(p, Sphere) for p in primitives])
    on_sphere = is_sphere[prim]
    if on_sphere.any():
        centers = np.array([p.center if isinstance(p, Sphere) else np.zeros(3) for p in primitives])
        rotations = np.array([p.rotation if isinstance(p, Sphere) else np.eye(3) for p in primitives])
        which = prim[on_sphere]
        normals[on_sphere], uv[on_sphere] = _sphere_surface(points[on_sphere], centers[which], rotations[which])
    for k, primitive in enumerate(primitives):
        start, stop = runs[k]
        if stop > start and not is_sphere[k]:
            normals[start:stop], uv[start:stop] = primitive.surface(points[start:stop])
    return normals, uv


def _texture_runs(primitives: Sequence[Primitive], by_rank: np.ndarray, starts: np.ndarray):
    """(texture, start, stop) for every run of hits that shows one texture object."""
    r = 0
    while r < len(primitives):
        texture = primitives[by_rank[r]].texture
        q = r + 1
        while q < len(primitives) and primitives[by_rank[q]].texture is texture:
            q += 1
        if starts[q] > starts[r]:
            yield texture, int(starts[r]), int(starts[q])
        r = q


def render(primitives: Sequence[Primitive], camera: Camera, light_dir: Sequence[float] = (0.3, -0.4, 0.85),
           ambient: float = 0.35, background=None) -> Frame:
    """Cast one ray per pixel; Lambert-shade the textures (`light_dir` points towards the light).

    `background`: None (black, alpha 0: transparent), an RGB colour, or an (H, W, 3) image.
    """
    h, w = camera.height, camera.width
    count = len(primitives)
    rays = camera.rays()
    depth, index = _zbuffer(primitives, camera, rays)
    # Hits sorted by (texture, primitive): each texture and each primitive is one slice.
    rank = _texture_ranks(primitives)
    by_rank = np.argsort(rank)
    flat_index = index.reshape(-1)
    hit_flat = np.flatnonzero(flat_index >= 0)
    ranked = rank[flat_index[hit_flat]]
    order = np.argsort(ranked.astype(np.int16 if count < 32000 else np.int64), kind="stable")  # radix sort
    hit_flat, ranked = hit_flat[order], ranked[order]
    prim = by_rank[ranked]
    starts = np.concatenate([[0], np.cumsum(np.bincount(ranked, minlength=count))])
    runs = [(int(starts[rank[k]]), int(starts[rank[k] + 1])) for k in range(count)]
    d = np.take(rays.reshape(-1, 3), hit_flat, axis=0)
    points = camera.position + depth.reshape(-1)[hit_flat][:, None] * d
    normals_hit, uv = _surfaces(primitives, prim, points, runs)
    normals_hit[np.einsum("ij,ij->i", normals_hit, d) > 0] *= -1.0  # face the camera
    light = unit(np.asarray(light_dir, dtype=np.float64))
    shade = (ambient + (1.0 - ambient) * np.clip(rows_times(normals_hit, light), 0.0, 1.0)).astype(np.float32)
    colour = np.empty((len(points), 3), np.float32)
    for texture, start, stop in _texture_runs(primitives, by_rank, starts):
        colour[start:stop] = sample_texture(texture, uv[start:stop])
    colour *= shade[:, None]
    rgb = _background(background, h, w).reshape(-1, 3)
    rgb[hit_flat] = colour
    normals = np.zeros((h * w, 3), np.float32)
    normals[hit_flat] = rows_times(normals_hit, camera.R.T)
    instance = np.zeros(h * w, np.int32)
    instance[hit_flat] = np.array([p.instance_id for p in primitives], np.int32)[prim] if count else 0
    semantic = np.zeros(h * w, np.int32)
    semantic[hit_flat] = np.array([p.class_id for p in primitives], np.int32)[prim] if count else 0
    hit = index >= 0
    return Frame(
        rgb=np.clip(np.rint(rgb.reshape(h, w, 3)), 0, 255).astype(np.uint8),
        alpha=np.where(hit, 255, 0).astype(np.uint8),
        depth=np.where(hit, depth, 0.0).astype(np.float32),
        normals=normals.reshape(h, w, 3),
        instance=instance.reshape(h, w),
        semantic=semantic.reshape(h, w),
        primitive=index,
    )


def sky(height: int, width: int, top: Sequence[int] = (120, 165, 225),
        bottom: Sequence[int] = (205, 222, 240)) -> np.ndarray:
    """A vertical gradient used where no primitive is hit (an outdoor sky)."""
    mix = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    column = (1 - mix) * np.asarray(top, np.float32) + mix * np.asarray(bottom, np.float32)
    return np.broadcast_to(column, (height, width, 3)).copy()
