"""The read side: views built from the event log by the projector."""

from projections.audit import AuditView
from projections.cases import CaseView
from projections.chain import ChainView
from projections.subsidies import LiaisonView

VIEWS = (CaseView, AuditView, LiaisonView, ChainView)
