"""`bepbuild test`: a deployment tried in its own isolated image before any job.

- `target`: what is tried (a deployment file built as deploy builds it, registering nothing; or a
  registered deployment's pinned image) and the settings, limits, lock and Python pin of its jobs;
- `container`: one isolated container, its peak memory, its removal whatever happens, the scratch
  folder and the leftovers of killed runs;
- `pytest_image`: the image derived for `--pytest` (pytest in a layer of its own);
- `report`: the report, its text, the verdict and the `--all` table;
- `run`: the verbs (`test_file`, `test_registered`, `test_all`).
"""
