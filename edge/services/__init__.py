"""What the appliance does, each service taking the narrow ports it needs (`edge.ports`), never
the whole appliance; `edge.app` builds and wires them.

- `intake`: captures, uploads and watched-folder files into tickets (spooled first), preview;
- `pipeline`: reads a plate (decode, detect, titres) with `reading` and hands it to `commit`;
- `reading`: the detector and well classifier in force, and the read of one plate;
- `commit`: the run's one transaction and, after it, the display images;
- `runs`: stored runs and samples (pages, images, CSVs), a supervisor's delete or re-read;
- `exporter`: the LabWare CSVs in the share; `retention`: old runs' images and records;
- `calibration`, `runtime`: the grid and the supervisor's runtime settings; `audit`: who did what;
- `health`: started, the disk floor, readiness and status;
- `messages`: the `core.wire` messages a change sends;
- `enroll`, `analyze`: the enrolment bundle and the offline reader the CLI runs.
"""
