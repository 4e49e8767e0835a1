"""Region codes from MovieLens zip codes: ``US-<first digit>`` for US zips, ``INTL`` otherwise."""

from __future__ import annotations

import pandas as pd

US_ZIP = r"^\d{5}(?:-\d{4})?$"


def zip_to_region(zips: pd.Series) -> pd.Series:
    """Map zip codes to regions, vectorised.

    A five-digit zip (optionally ZIP+4) is a US zip and maps to ``US-<first digit>``
    (the ten US zip-code zones); any other non-empty code is ``INTL``; empty or missing is null.
    """
    z = zips.astype("string").str.strip()
    us = z.str.fullmatch(US_ZIP).fillna(False).astype(bool)
    out = pd.Series(pd.NA, index=zips.index, dtype="object")
    out[us] = "US-" + z[us].str[0]
    other = ~us & z.notna() & (z.str.len() > 0).fillna(False).astype(bool)
    out[other] = "INTL"
    return out.where(out.notna(), None)
