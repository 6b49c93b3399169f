"""Writing one episode to a new RRD atomically, with provenance (`episode`): every recording
roboloop makes (demonstrations, rollouts, layers, runs) goes through it."""
