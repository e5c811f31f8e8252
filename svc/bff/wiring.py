"""What every BFF's `build(app)` does before registering its servicer: its settings, and the
aggregation over the services of its product profile."""

from __future__ import annotations

from typing import TypeVar

from svc.bff.config import BffSettings
from svc.kit import catalog as catalog_module
from svc.kit.aggregate import Aggregation, profile_deployment
from svc.kit.config import load_settings
from svc.kit.server import ServiceApp

SettingsT = TypeVar("SettingsT", bound=BffSettings)


def settings_of(app: ServiceApp, settings_type: type[SettingsT]) -> SettingsT:
    """The app's settings when they are the BFF's own (tests), else read from the environment."""
    return app.settings if isinstance(app.settings, settings_type) else load_settings(settings_type)


def aggregation(app: ServiceApp, settings: BffSettings, *, forbidden_state: bool = False) -> Aggregation:
    catalog = app.catalog or catalog_module.default()
    return Aggregation(
        cap_s=settings.downstream_deadline_s,
        deployed=profile_deployment(catalog, settings.product_profile),
        forbidden_state=forbidden_state,
    )
