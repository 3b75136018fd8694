"""The temporal choice of library mouths: one entry per frame, without flicker.

Each frame brings its k nearest library mouths (distances, ids). A path through them costs
the distances + ``switch_cost`` for each jump to an unrelated entry - ``follow_bonus`` for
each step that plays the library's own next frame (the real video going on) + 0 for
holding, so near-ties do not flicker. :class:`TemporalChooser` solves it online: frame t is
decided once frame t + ``lag`` is known (fixed-lag Viterbi), so memory stays flat.
"""

from __future__ import annotations

from collections import deque

import numpy as np


def transition_costs(prev_ids: np.ndarray, ids: np.ndarray, follows: np.ndarray,
                     switch_cost: float, follow_bonus: float) -> np.ndarray:
    """(len(prev_ids), len(ids)) cost of going from one candidate entry to the next:
    0 to stay, -bonus to play the library's next frame, +switch_cost otherwise."""
    same = prev_ids[:, None] == ids[None, :]
    nxt = (ids[None, :] == prev_ids[:, None] + 1) & follows[np.clip(prev_ids, 0, None)][:, None]
    return np.where(same, 0.0, np.where(nxt, -follow_bonus, switch_cost))


def viterbi(costs: np.ndarray, ids: np.ndarray, follows: np.ndarray, switch_cost: float,
            follow_bonus: float, start_id: int | None = None) -> np.ndarray:
    """Best path through (T, k) candidate entries with unary ``costs``: (T,) column choices."""
    t_len, _ = costs.shape
    acc = costs[0].astype(np.float64).copy()
    if start_id is not None:
        acc += transition_costs(np.array([start_id]), ids[0], follows, switch_cost,
                                follow_bonus)[0]
    back = np.zeros(costs.shape, np.int64)
    for t in range(1, t_len):
        total = acc[:, None] + transition_costs(ids[t - 1], ids[t], follows, switch_cost,
                                                follow_bonus)
        back[t] = np.argmin(total, axis=0)
        acc = total[back[t], np.arange(total.shape[1])] + costs[t]
    path = np.zeros(t_len, np.int64)
    path[-1] = int(np.argmin(acc))
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


class TemporalChooser:
    """Online fixed-lag Viterbi: frame t is decided once frame t + ``lag`` is known, on the
    best path over the window that starts from the last decided entry."""

    def __init__(self, follows: np.ndarray, lag: int = 8, switch_cost: float = 0.15,
                 follow_bonus: float = 0.05) -> None:
        self.follows, self.lag = follows, lag
        self.switch_cost, self.follow_bonus = switch_cost, follow_bonus
        self.window: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self.last: int | None = None

    def push(self, distances: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
        """Add a frame's candidates; returns the (entry, distance) of frames now decided."""
        self.window.append((distances, ids))
        return self._decide(len(self.window) - self.lag)

    def flush(self) -> list[tuple[int, float]]:
        """Decide every frame still waiting (end of a voiced stretch)."""
        out = self._decide(len(self.window))
        self.last = None
        return out

    def _decide(self, n: int) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        if n <= 0:
            return out
        costs = np.stack([d for d, _ in self.window])
        ids = np.stack([i for _, i in self.window])
        path = viterbi(costs, ids, self.follows, self.switch_cost, self.follow_bonus,
                       self.last)
        for t in range(n):
            d, i = self.window.popleft()
            self.last = int(i[path[t]])
            out.append((self.last, float(d[path[t]])))
        return out
