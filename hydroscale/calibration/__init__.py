"""calibration (see DESIGN §2)."""
