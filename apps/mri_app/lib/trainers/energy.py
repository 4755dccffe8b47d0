"""Energy and CO2 of a training run, measured by codecarbon in offline mode (no network)."""

import logging
from typing import Dict

logger = logging.getLogger(__name__)


class EnergyMeter:
    """Context manager around a training run: codecarbon's offline tracker runs inside it; afterwards :attr:`record`
    is the run's ``energy`` entry (statistics and ``model.json``): kWh, kg CO2eq, country, duration; or
    ``{"recorded": False}`` where codecarbon could not run. Energy accounting never stops a training.

    Args:
        country: ISO code of the country whose electricity mix converts energy to CO2 (request ``carbon_country``).
        active: False measures nothing (ranks other than 0 of a multi-process run).
    """

    def __init__(self, country: str, active: bool = True):
        self.country, self.active = country, active
        self.tracker = None
        self.record: Dict = {"recorded": False}

    def __enter__(self) -> "EnergyMeter":
        self.tracker = _start(self.country) if self.active else None
        return self

    def __exit__(self, *exc_info) -> None:  # an exception of the run goes on
        self.record = _stop(self.tracker)


def _start(country: str):
    """A started codecarbon tracker in offline mode (no network), or None where codecarbon cannot run here."""
    try:
        from codecarbon import OfflineEmissionsTracker

        tracker = OfflineEmissionsTracker(country_iso_code=country, save_to_file=False, log_level="error")
        tracker.start()
        return tracker
    except Exception as error:  # energy accounting must never stop a training
        logger.warning(f"codecarbon could not start ({error}); this run's energy is not recorded")
        return None


def _stop(tracker) -> Dict:
    """Energy (kWh) and emissions (kg CO2eq) of the run measured by ``tracker``."""
    if tracker is None:
        return {"recorded": False}
    try:
        emissions = tracker.stop()
        data = tracker.final_emissions_data
        return {
            "recorded": True,
            "energy_kwh": float(data.energy_consumed),
            "co2_kg": float(emissions),
            "country": data.country_name,
            "duration_s": round(float(data.duration), 1),
            "tool": "codecarbon (offline)",
        }
    except Exception as error:
        logger.warning(f"codecarbon could not finish ({error}); this run's energy is not recorded")
        return {"recorded": False}
