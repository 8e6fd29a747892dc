"""The read side: views built from the event log by the projector; and the stores kept beside the
log that the write side uses too: the key ring sealing personal values (privacy.py) and the index of
persons by ID number (identities.py)."""

from projections.audit import AuditView
from projections.cases import CaseView
from projections.chain import ChainView
from projections.subsidies import LiaisonView

VIEWS = (CaseView, AuditView, LiaisonView, ChainView)
