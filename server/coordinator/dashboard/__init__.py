"""Read-only operator dashboard: server-rendered HTML pages with inline SVG charts."""

from server.coordinator.dashboard.routes import router

__all__ = ["router"]
