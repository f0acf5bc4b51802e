"""Hardware access: CAN, GNSS, GPIO. Never imports agent/."""
