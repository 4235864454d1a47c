"""What leaves the trap as files: Camtrap DP packages, training sets, plots."""
