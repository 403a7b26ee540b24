"""The fixed shape of a simulated account: its endpoints, numbers and customers."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_AGENT_NAMES = (
    "Ana Rodríguez",
    "Carlos Jiménez",
    "María Fernanda Vargas",
    "José Mora",
    "Laura Chaves",
    "Diego Solís",
    "Sofía Araya",
    "Andrés Castro",
    "Valeria Rojas",
    "Luis Quesada",
    "Soporte, Nivel 2",
    "Ventas & Cobros",
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint (SIP user) of an account: a 7-digit id and a display name."""

    id: str
    name: str
    extension: str
    number: int = field(init=False)
    """The id as a number (some records carry it so)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "number", int(self.id))


@dataclass(frozen=True, slots=True)
class Profile:
    """The fixed shape of one account: its IVR (main endpoint), agents, trunk and numbers."""

    main: Endpoint
    agents: tuple[Endpoint, ...]
    trunk: Endpoint
    dids: tuple[str, ...]
    customers: tuple[str, ...]


def build_profile(username: str, seed: int, agents: int = 6) -> Profile:
    """The account's endpoints and numbers, derived from (seed, username) alone."""
    rng = random.Random(f"profile:{seed}:{username}")
    used = {username}

    def new_id() -> str:
        while True:
            candidate = str(rng.randint(1_000_000, 9_999_999))
            if candidate not in used:
                used.add(candidate)
                return candidate

    names = rng.sample(_AGENT_NAMES, k=min(agents, len(_AGENT_NAMES)))
    names += [f"Agente {n}" for n in range(len(names) + 1, agents + 1)]
    staff = tuple(Endpoint(new_id(), name, str(101 + n)) for n, name in enumerate(names))
    dids = tuple(f"4000{rng.randint(0, 9999):04d}" for _ in range(3))
    customers = tuple(_phone_number(rng) for _ in range(300))
    return Profile(
        main=Endpoint(username, "IVR <Principal>", "100"),
        agents=staff,
        trunk=Endpoint(new_id(), "Troncal SIP", ""),
        dids=dids,
        customers=customers,
    )


def _phone_number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.55:
        number = f"{rng.choice('678')}{rng.randint(0, 9_999_999):07d}"  # mobile
    elif kind < 0.85:
        number = f"2{rng.randint(0, 9_999_999):07d}"  # landline
    else:
        return f"1{rng.choice(('305', '786', '212', '415'))}{rng.randint(0, 9_999_999):07d}"
    return f"506{number}" if rng.random() < 0.3 else number
