"""Titre patterns: which state every well of a synthetic plate is in.

A row is one serum diluted two-fold along the columns. Inhibited wells (low column numbers) flow;
past the endpoint the red cells agglutinate. Real plates add noise to that clean step, so the
generator does too: occasional skipped wells before the endpoint, rows that never inhibit, rows
that inhibit everywhere, and invalid wells (empty, bubble, debris). Invalid wells are rendered far
more often than a lab sees them because the rarest class is where detectors make their mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Model class ids, in order. The manifest's "classes" list is this tuple.
CLASSES: tuple[str, ...] = ("agglutinated", "flowing", "invalid")
CLASS_ID = {name: i for i, name in enumerate(CLASSES)}

INVALID_KINDS: tuple[str, ...] = ("empty", "bubble", "debris")


@dataclass(frozen=True)
class WellSpec:
    """What one well shows: its class and, for invalid wells, what made it invalid."""

    row: int
    col: int
    state: str  # one of CLASSES
    kind: str  # "button" / "mat" / one of INVALID_KINDS


@dataclass(frozen=True)
class RowSpec:
    """The intended endpoint of a row (before skips and invalid wells perturb it)."""

    row: int
    pattern_endpoint: int
    skipped_cols: tuple[int, ...]


def true_endpoint(states: list[str]) -> int:
    """Last flowing column (1-based), 0 when no well flows: the rule the product uses."""
    last = 0
    for i, state in enumerate(states, start=1):
        if state == "flowing":
            last = i
    return last


def sample_endpoint(rng: np.random.Generator, n_cols: int) -> int:
    """Endpoint 0..n_cols, with extra mass on the censored ends (no inhibition / all inhibited)."""
    u = rng.random()
    if u < 0.08:
        return 0
    if u < 0.16:
        return n_cols
    return int(rng.integers(1, n_cols))


def plate_pattern(
    rng: np.random.Generator,
    n_rows: int = 8,
    n_cols: int = 12,
    *,
    invalid_rate: float | None = None,
    skip_rate: float = 0.12,
) -> tuple[list[WellSpec], list[RowSpec]]:
    """Well states for one plate.

    `invalid_rate` is the per-well chance of an invalid well; by default each plate draws its own
    rate (mostly a few percent, sometimes none, sometimes many) so both clean and messy plates
    occur.
    """
    if invalid_rate is None:
        invalid_rate = float(rng.choice([0.0, 0.03, 0.06, 0.1, 0.16], p=[0.1, 0.3, 0.3, 0.2, 0.1]))
    wells: list[WellSpec] = []
    rows: list[RowSpec] = []
    for r in range(n_rows):
        endpoint = sample_endpoint(rng, n_cols)
        states = ["flowing" if c < endpoint else "agglutinated" for c in range(n_cols)]
        skipped: list[int] = []
        # A skipped well: an agglutinated well before the endpoint (pipetting slip, weak serum).
        if endpoint >= 3 and rng.random() < skip_rate:
            c = int(rng.integers(1, endpoint - 1))
            states[c] = "agglutinated"
            skipped.append(c + 1)
        # The opposite noise: a lone flowing well past the endpoint (prozone, late tilt).
        if endpoint <= n_cols - 3 and rng.random() < skip_rate / 2:
            c = int(rng.integers(endpoint + 1, n_cols - 1))
            states[c] = "flowing"
        kinds = ["button" if s == "flowing" else "mat" for s in states]
        for c in range(n_cols):
            if rng.random() < invalid_rate:
                states[c] = "invalid"
                kinds[c] = str(rng.choice(INVALID_KINDS, p=[0.35, 0.35, 0.30]))
        wells.extend(WellSpec(r, c, states[c], kinds[c]) for c in range(n_cols))
        rows.append(RowSpec(r, endpoint, tuple(skipped)))
    return wells, rows
