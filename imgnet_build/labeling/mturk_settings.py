"""Mechanical Turk settings (the `[mturk]` table of `imgnet.toml`) and what HITs cost.

    [mturk]
    reward = "0.10"                 # USD per assignment (one worker doing one task)
    assignment_duration = 600       # seconds a worker has for one task
    lifetime = 259200               # seconds a HIT stays on the marketplace (3 days)
    auto_approval_delay = 259200    # seconds before MTurk approves what collect did not review
    min_approval_rate = 95          # qualification: percent of a worker's work approved
    min_approved = 100              # qualification: number of a worker's HITs approved
    locale = "US"                   # qualification: the worker's country (optional)
    public_base_url = "https://images.example.org/blobs"   # where workers load images (optional)
    reject_below = 0.5              # reject an assignment whose control accuracy is lower ...
    reject_min_controls = 4         # ... and only with at least this many controls in it

Every value is checked when the workspace opens, so a reward like 0.001 or -1 never
reaches MTurk. Fees follow MTurk's pricing: 20% of reward and bonus, 40% when a HIT has
10 or more assignments, at least $0.01 per assignment.
"""

from __future__ import annotations

import dataclasses
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from imgnet_build.errors import BadInput

__all__ = ["MTurkSettings", "Price", "assignment_cost", "price"]

CENT = Decimal("0.01")
MAX_LIFETIME = 365 * 24 * 3600  # MTurk's limit
MAX_AUTO_APPROVAL = 30 * 24 * 3600
PRESIGNED_URL_MAX = 7 * 24 * 3600  # S3 (SigV4) presigned URLs live at most a week


@dataclasses.dataclass(frozen=True)
class MTurkSettings:
    reward: str = "0.10"
    assignment_duration: int = 600
    lifetime: int = 3 * 24 * 3600
    auto_approval_delay: int = 3 * 24 * 3600
    min_approval_rate: int = 95
    min_approved: int = 100
    locale: str | None = None
    public_base_url: str | None = None
    reject_below: float = 0.5
    reject_min_controls: int = 4
    title: str = "Select the images that show an object"
    description: str = "Look at a grid of photos and select every one that contains the object named on the page."
    keywords: str = "image, labeling, categorization, photo"

    def __post_init__(self) -> None:
        where = "imgnet.toml [mturk]"
        if not isinstance(self.reward, str) or not re.fullmatch(r"[0-9]+(\.[0-9]{1,2})?", self.reward) \
                or Decimal(self.reward) < CENT:
            raise BadInput(f"{where} reward must be a quoted USD amount of at least \"0.01\" with at most two "
                           f"decimals, like \"0.10\", not {self.reward!r}")
        _check_int(f"{where} assignment_duration", self.assignment_duration, 30, MAX_LIFETIME)
        _check_int(f"{where} lifetime", self.lifetime, 30, MAX_LIFETIME)
        _check_int(f"{where} auto_approval_delay", self.auto_approval_delay, 0, MAX_AUTO_APPROVAL)
        _check_int(f"{where} min_approval_rate", self.min_approval_rate, 0, 100)
        _check_int(f"{where} min_approved", self.min_approved, 0, 10**9)
        _check_int(f"{where} reject_min_controls", self.reject_min_controls, 1, 1000)
        if isinstance(self.reject_below, bool) or not isinstance(self.reject_below, (int, float)) or not 0 <= self.reject_below <= 1:
            raise BadInput(f"{where} reject_below must be a share between 0 and 1, not {self.reject_below!r}")
        if self.locale is not None and not (isinstance(self.locale, str) and re.fullmatch(r"[A-Z]{2}", self.locale)):
            raise BadInput(f"{where} locale must be a two-letter country code like \"US\", not {self.locale!r}")
        if self.public_base_url is not None and not (isinstance(self.public_base_url, str)
                                                     and re.match(r"https://[^/\s]+", self.public_base_url)):
            raise BadInput(f"{where} public_base_url must be an https:// URL (workers' browsers load images "
                           f"from it inside MTurk's https page), not {self.public_base_url!r}")
        for name in ("title", "description", "keywords"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > 2000:
                raise BadInput(f"{where} {name} must be a non-empty text of at most 2000 characters")

    @classmethod
    def from_table(cls, table: object, path: Path | str = "imgnet.toml") -> MTurkSettings:
        if not isinstance(table, dict):
            raise BadInput(f"{path}: mturk must be a table ([mturk]), not {table!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise BadInput(f"{path}: unknown [mturk] setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**table)

    @property
    def reward_usd(self) -> Decimal:
        return Decimal(self.reward)

    @property
    def reward_cents(self) -> int:
        return int(self.reward_usd * 100)  # validated: whole cents

    def qualification_requirements(self) -> list[dict]:
        """MTurk's system qualifications: approval rate, number approved, optional locale."""
        requirements = [
            {"QualificationTypeId": "000000000000000000L0", "Comparator": "GreaterThanOrEqualTo",
             "IntegerValues": [self.min_approval_rate], "ActionsGuarded": "DiscoverPreviewAndAccept"},
            {"QualificationTypeId": "00000000000000000040", "Comparator": "GreaterThanOrEqualTo",
             "IntegerValues": [self.min_approved], "ActionsGuarded": "DiscoverPreviewAndAccept"},
        ]
        if self.locale:
            requirements.append({"QualificationTypeId": "00000000000000000071", "Comparator": "EqualTo",
                                 "LocaleValues": [{"Country": self.locale}], "ActionsGuarded": "DiscoverPreviewAndAccept"})
        return requirements


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInput(f"{name} must be a whole number between {low} and {high}, not {value!r}")


def assignment_cost(reward: Decimal, assignments_in_hit: int) -> tuple[Decimal, Decimal]:
    """(reward, MTurk's fee) of one assignment of a HIT with `assignments_in_hit` assignments."""
    rate = Decimal("0.40") if assignments_in_hit >= 10 else Decimal("0.20")
    fee = max(CENT, (reward * rate).quantize(CENT, rounding=ROUND_HALF_UP))
    return reward, fee


@dataclasses.dataclass(frozen=True)
class Price:
    """What a set of HITs costs: rewards, MTurk's fee, and their sum, in USD."""

    tasks: int = 0
    assignments: int = 0
    reward_usd: Decimal = Decimal("0.00")
    fee_usd: Decimal = Decimal("0.00")

    @property
    def total_usd(self) -> Decimal:
        return self.reward_usd + self.fee_usd

    def __add__(self, other: Price) -> Price:
        return Price(self.tasks + other.tasks, self.assignments + other.assignments,
                     self.reward_usd + other.reward_usd, self.fee_usd + other.fee_usd)

    def as_dict(self) -> dict:
        return {"tasks": self.tasks, "assignments": self.assignments, "reward_usd": str(self.reward_usd),
                "fee_usd": str(self.fee_usd), "total_usd": str(self.total_usd)}

    def summary(self) -> str:
        return (f"{self.tasks} HITs, {self.assignments} assignments: reward ${self.reward_usd}, "
                f"MTurk fee ${self.fee_usd}, total ${self.total_usd}")


def price(reward: Decimal, hit_size: int, assignments: int, tasks: int = 1) -> Price:
    """The price of `assignments` assignments of HITs that have `hit_size` assignments each."""
    reward_each, fee_each = assignment_cost(reward, hit_size)
    return Price(tasks, assignments, reward_each * assignments, fee_each * assignments)
