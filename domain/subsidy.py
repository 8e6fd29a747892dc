"""The liaison's monthly work subsidy (联络员工作补贴): 50 to 200 yuan by work taken on.

Work is the cases a liaison handled (was assignee of, while open) in the month
plus the visits they recorded in it. Tiers are set in configuration as
"from:amount" pairs, e.g. "1:50,10:100,20:150,40:200".
"""

from dataclasses import dataclass
from decimal import Decimal

from domain.errors import InvalidInput

DEFAULT_TIERS = "1:50,10:100,20:150,40:200"


@dataclass(frozen=True)
class SubsidyTiers:
    tiers: tuple[tuple[int, Decimal], ...]  # (least work, yuan), ascending

    @classmethod
    def parse(cls, text: str) -> "SubsidyTiers":
        try:
            pairs = [part.split(":") for part in text.split(",")]
            tiers = tuple(sorted((int(least), Decimal(amount).quantize(Decimal("0.01"))) for least, amount in pairs))
        except (ValueError, ArithmeticError):
            raise InvalidInput("subsidy_tiers", 'must be "least:yuan" pairs, e.g. "1:50,10:100"') from None
        if not tiers or tiers[0][0] < 1:
            raise InvalidInput("subsidy_tiers", "the first tier must start at 1 or more")
        return cls(tiers)

    def subsidy(self, work: int) -> Decimal:
        earned = Decimal("0.00")
        for least, amount in self.tiers:
            if work >= least:
                earned = amount
        return earned
