"""kernels (see DESIGN §2)."""
