"""The coordinator: FastAPI app, store (SQLAlchemy + Alembic), run jobs and dashboard."""
