"""SQL table of stored /v1/responses answers (registered on `tkr_embed.db.Base`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tkr_embed.db import Base


class StoredResponseRow(Base):
    """One stored response. The JSON columns hold the wire shapes as returned: `response` is the response object,
    `input_items` this request's input items (with the ids `input_items` lists them by), `history` the items of
    the stored responses it continues (their inputs and outputs, oldest first), which a continuation renders
    before its own input."""

    __tablename__ = "stored_responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))  # the key id of the caller that created it ("anonymous": auth off)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    status: Mapped[str] = mapped_column(String(16))
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    response: Mapped[str] = mapped_column(Text)
    input_items: Mapped[str] = mapped_column(Text)
    history: Mapped[str] = mapped_column(Text)
