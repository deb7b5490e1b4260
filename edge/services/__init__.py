"""What the appliance does, each service taking the narrow ports it needs (`edge.ports`), never
the whole appliance; `edge.app` builds and wires them.

- `intake`: captures, uploads and watched-folder files into tickets (spooled first);
- `pipeline`: reads a plate (decode, detect, titres) and hands it to `commit`;
- `commit`: the run's one transaction and, after it, the display images;
- `exporter`: the LabWare CSVs in the share; `retention`: old runs' images and records;
- `calibration`, `runtime`: the grid and the supervisor's runtime settings;
- `health`: readiness and status; `messages`: the `core.wire` messages a change sends;
- `enroll`, `analyze`: the enrolment bundle and the offline reader the CLI runs.
"""
