"""Macro placement as a gymnasium environment, in the spirit of RL chip floorplanning
(Mirhoseini et al. 2021, "A graph placement methodology for fast chip design", Nature 594).

A netlist is N rectangular macros (integer width x height) joined by multi-pin nets. Macros are
placed one at a time, largest first, by choosing the grid cell of the macro's lower-left corner.
Cells where the macro would overlap a placed one or leave the grid are masked
(``info["action_mask"]``). The only reward comes at the end: minus the half-perimeter wirelength
(HPWL) of all nets, divided by ``nets * grid`` so returns lie in (-2, 0]. Pins sit at macro centres.

Netlists come from an integer id: training episodes draw ids below ``HELDOUT`` from the env's RNG;
evaluation uses ids ``HELDOUT + k`` (``reset(options={"netlist": heldout_id(k)})``), which training
never draws, so the held-out netlists are never seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

HELDOUT = 2**31  # training netlist ids lie in [0, HELDOUT), held-out ids at HELDOUT + k
STUCK_REWARD = -2.0  # a macro with no free cell: worse than any complete placement (each net's HPWL < 2G)


def heldout_id(k: int) -> int:
    return HELDOUT + k


@dataclass
class Netlist:
    sizes: np.ndarray  # (N, 2) int: width (x), height (y); sorted by area, largest first
    nets: list[np.ndarray]  # each: the macro indices (2..max_pins) a net connects
    netlist_id: int

    @property
    def n(self) -> int:
        return len(self.sizes)


def make_netlist(netlist_id: int, *, macros: int, max_size: int, nets: int, max_pins: int) -> Netlist:
    """Random sizes in [1, max_size]^2 and ``nets`` random nets; every macro is on at least one net."""
    rng = np.random.default_rng(netlist_id)
    sizes = rng.integers(1, max_size + 1, size=(macros, 2))
    sizes = sizes[np.argsort(-sizes.prod(1), kind="stable")]
    members = [rng.choice(macros, size=int(rng.integers(2, max_pins + 1)), replace=False) for _ in range(nets)]
    for m in range(macros):  # an unconnected macro would be placed anywhere: join it to a random net
        if not any(m in net for net in members):
            k = int(rng.integers(nets))
            members[k] = np.append(members[k], m)
    return Netlist(sizes=sizes, nets=[np.sort(x) for x in members], netlist_id=netlist_id)


def centres(sizes: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(N, 2) lower-left corners -> (N, 2) float centres (the pins)."""
    return corners + sizes / 2.0


def hpwl(netlist: Netlist, corners: np.ndarray) -> float:
    """Half-perimeter wirelength: per net, width + height of the bounding box of its pins."""
    c = centres(netlist.sizes, corners)
    return float(sum((c[net].max(0) - c[net].min(0)).sum() for net in netlist.nets))


def valid_corners(occupied: np.ndarray, w: int, h: int) -> np.ndarray:
    """(G, G) bool occupancy [y, x] -> (G, G) bool: corner (x, y) fits a w x h macro in free cells."""
    g = occupied.shape[0]
    ok = np.zeros((g, g), dtype=bool)
    if w > g or h > g:
        return ok
    s = np.zeros((g + 1, g + 1), dtype=np.int64)  # 2-D prefix sums: any window's count in O(1)
    s[1:, 1:] = occupied.cumsum(0).cumsum(1)
    ys, xs = g - h + 1, g - w + 1
    inside = s[h:h + ys, w:w + xs] - s[:ys, w:w + xs] - s[h:h + ys, :xs] + s[:ys, :xs]
    ok[:ys, :xs] = inside == 0
    return ok


def added_wirelength(netlist: Netlist, corners: np.ndarray, placed: int, m: int,
                     candidates: np.ndarray) -> np.ndarray:
    """HPWL that placing macro ``m`` at each candidate corner (K, 2) adds to the nets it shares
    with the ``placed`` macros (indices < placed) -> (K,)."""
    cand = candidates + netlist.sizes[m] / 2.0
    placed_c = centres(netlist.sizes[:placed], corners[:placed])
    cost = np.zeros(len(candidates))
    for net in netlist.nets:
        if m not in net:
            continue
        others = net[net < placed]
        if len(others) == 0:
            continue
        lo, hi = placed_c[others].min(0), placed_c[others].max(0)
        cost += (np.maximum(cand - hi, 0) + np.maximum(lo - cand, 0)).sum(1)
    return cost


def place(netlist: Netlist, grid: int, choose) -> np.ndarray | None:
    """Place macros in order; ``choose(m, corners, placed, candidates (K, 2) [x, y])`` returns an
    index into candidates. Returns the (N, 2) corners, or None if some macro found no free cell."""
    occupied = np.zeros((grid, grid), dtype=bool)
    corners = np.zeros((netlist.n, 2), dtype=np.int64)
    for m, (w, h) in enumerate(netlist.sizes):
        ys, xs = np.nonzero(valid_corners(occupied, w, h))
        if len(xs) == 0:
            return None
        cand = np.stack([xs, ys], 1)
        x, y = cand[choose(m, corners, m, cand)]
        corners[m] = (x, y)
        occupied[y:y + h, x:x + w] = True
    return corners


def random_placement(netlist: Netlist, grid: int, rng: np.random.Generator) -> np.ndarray | None:
    """Baseline: each macro at a uniformly random free cell."""
    return place(netlist, grid, lambda m, corners, placed, cand: int(rng.integers(len(cand))))


def greedy_placement(netlist: Netlist, grid: int) -> np.ndarray | None:
    """Baseline: each macro where it adds the least wirelength to nets with placed macros; ties go
    to the cell whose macro centre is nearest the grid centre."""
    def choose(m: int, corners: np.ndarray, placed: int, cand: np.ndarray) -> int:
        cost = added_wirelength(netlist, corners, placed, m, cand)
        centre_dist = np.abs(cand + netlist.sizes[m] / 2.0 - grid / 2.0).sum(1)
        return int(np.lexsort((centre_dist, cost))[0])

    return place(netlist, grid, choose)


class MacroPlacementEnv(gym.Env):
    """Observation (flat float32, 2 G^2 + 6): occupancy (G, G), the next macro's connectivity map
    (G, G: cells of each placed macro hold the number of nets it shares with the next macro, / the
    maximum), the next macro's width and height / max_size, the pin-weighted centroid of its
    connected placed macros / G (x, y), a flag that it has any, and the fraction already placed.
    Action: the cell y * G + x of the next macro's lower-left corner."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, grid: int = 10, macros: int = 8, max_size: int = 3, nets: int = 10, max_pins: int = 4,
                 render_mode: str | None = None):
        if not (1 <= max_size <= grid and macros >= 2 and nets >= 1 and 2 <= max_pins <= macros):
            raise ValueError(f"MacroPlacementEnv needs 1 <= max_size <= grid, macros >= 2, nets >= 1 and "
                             f"2 <= max_pins <= macros (got grid={grid}, macros={macros}, max_size={max_size}, "
                             f"nets={nets}, max_pins={max_pins}).")
        self.grid, self.macros, self.max_size, self.nets, self.max_pins = grid, macros, max_size, nets, max_pins
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(2 * grid * grid + 6,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(grid * grid)
        self.netlist: Netlist | None = None
        self.corners = np.zeros((macros, 2), dtype=np.int64)
        self.placed = 0
        self.occupied = np.zeros((grid, grid), dtype=bool)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        unknown = set(options or {}) - {"netlist"}
        if unknown:
            raise ValueError(f"MacroPlacementEnv.reset: unknown option(s) {sorted(unknown)}; the only option "
                             f"is 'netlist' (an int id; held-out ids are trainwell.rl.placement.heldout_id(k)).")
        if options and "netlist" in options:
            netlist_id = int(options["netlist"])
        else:
            netlist_id = int(self.np_random.integers(0, HELDOUT))
        self._start(netlist_id)
        return self._obs(), self._info()

    def step(self, action):
        assert self.netlist is not None, "call reset() first"
        a = int(action)
        mask = self.action_mask()
        if not (0 <= a < mask.size) or not mask[a]:  # an unmasked policy chose an illegal cell
            return self._obs(), STUCK_REWARD, True, False, {**self._info(), "illegal": True}
        y, x = divmod(a, self.grid)
        w, h = self.netlist.sizes[self.placed]
        self.corners[self.placed] = (x, y)
        self.occupied[y:y + h, x:x + w] = True
        self.placed += 1
        if self.placed == self.macros:
            wl = hpwl(self.netlist, self.corners)
            return self._obs(), -wl / (self.nets * self.grid), True, False, {**self._info(), "hpwl": wl}
        if not self.action_mask().any():
            return self._obs(), STUCK_REWARD, True, False, {**self._info(), "stuck": True}
        return self._obs(), 0.0, False, False, self._info()

    def render(self):
        if self.render_mode != "rgb_array" or self.netlist is None:
            return None
        fig = placement_figure([(self.netlist, self.corners[:self.placed], f"{self.placed}/{self.macros} placed")],
                               self.grid)
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    # ------------------------------------------------------------------ state
    def action_mask(self) -> np.ndarray:
        """(G * G,) bool: corners where the next macro fits (all False once every macro is placed)."""
        if self.netlist is None or self.placed >= self.macros:
            return np.zeros(self.grid * self.grid, dtype=bool)
        w, h = self.netlist.sizes[self.placed]
        return valid_corners(self.occupied, int(w), int(h)).reshape(-1)

    def get_state(self) -> dict[str, Any]:
        """Everything beyond the RNG (saved by the caller) that the next step depends on."""
        return {"netlist": None if self.netlist is None else self.netlist.netlist_id, "placed": self.placed,
                "corners": self.corners.tolist()}

    def set_state(self, state: dict[str, Any]) -> None:
        if state["netlist"] is None:
            self.netlist = None
            return
        self._start(int(state["netlist"]))
        for m, (x, y) in enumerate(state["corners"][:int(state["placed"])]):
            w, h = self.netlist.sizes[m]
            self.corners[m] = (x, y)
            self.occupied[y:y + h, x:x + w] = True
        self.placed = int(state["placed"])

    def _start(self, netlist_id: int) -> None:
        self.netlist = make_netlist(netlist_id, macros=self.macros, max_size=self.max_size, nets=self.nets,
                                    max_pins=self.max_pins)
        self.corners[:] = 0
        self.placed = 0
        self.occupied[:] = False

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self.action_mask()}

    def _obs(self) -> np.ndarray:
        g, nl = self.grid, self.netlist
        conn = np.zeros((g, g), dtype=np.float32)
        tail = np.zeros(6, dtype=np.float32)
        if nl is not None and self.placed < self.macros:
            m = self.placed
            weight = np.zeros(self.macros)  # nets shared with macro m, for each placed macro
            for net in nl.nets:
                if m in net:
                    weight[net[net < m]] += 1
            for j in np.flatnonzero(weight):
                (x, y), (w, h) = self.corners[j], nl.sizes[j]
                conn[y:y + h, x:x + w] = weight[j] / weight.max()
            tail[0:2] = nl.sizes[m] / self.max_size
            if weight.any():
                c = centres(nl.sizes[:m], self.corners[:m])
                tail[2:4] = (weight[:m, None] * c).sum(0) / weight.sum() / g
                tail[4] = 1.0
        tail[5] = self.placed / self.macros
        return np.concatenate([self.occupied.reshape(-1).astype(np.float32), conn.reshape(-1), tail])


def placement_figure(panels: list[tuple[Netlist, np.ndarray | None, str]], grid: int):
    """One axes per (netlist, corners of the placed macros or None, title): macros as rectangles, nets as
    lines from their pins to the net's centroid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(3.6 * len(panels), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    colours = [f"C{i % 10}" for i in range(10)]
    for i, (nl, corners, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.set_xlim(0, grid)
        ax.set_ylim(0, grid)
        ax.set_aspect("equal")
        ax.set_xticks(range(grid + 1), [])
        ax.set_yticks(range(grid + 1), [])
        ax.grid(True, linewidth=0.3)
        ax.set_title(title, fontsize=9)
        if corners is None:
            continue
        placed = len(corners)
        for m in range(placed):
            (x, y), (w, h) = corners[m], nl.sizes[m]
            ax.add_patch(Rectangle((x, y), w, h, facecolor="0.85", edgecolor="0.2"))
            ax.text(x + w / 2, y + h / 2, str(m), ha="center", va="center", fontsize=7)
        pins = corners + nl.sizes[:placed] / 2.0
        for j, net in enumerate(nl.nets):
            on = net[net < placed]
            if len(on) < 2:
                continue
            hub = pins[on].mean(0)
            for m in on:
                ax.plot([pins[m, 0], hub[0]], [pins[m, 1], hub[1]], color=colours[j % 10], linewidth=1, alpha=0.8)
    return fig
