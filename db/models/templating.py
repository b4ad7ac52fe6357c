"""Templates: marketers' overrides of the shipped defaults."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Integer,
    String,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from db.models.base import Base, server_now


class TemplateOverride(Base):
    """A marketer's version of a template for one channel and locale."""

    __tablename__ = "templates"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    locale: Mapped[str] = mapped_column(String(35), primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    kind: Mapped[str] = mapped_column(String(16))
    context: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    updated_by: Mapped[uuid.UUID | None] = mapped_column(UUID)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=server_now(), onupdate=server_now()
    )
