"""Models lrsweep builds or prepares: the toy organism, organisms from real models, real models prepared
offline, and the probe that asks whether a model shows a setting's behavior."""
