"""HTTP API: one router per area, thin routes over `cloud.crud`."""
