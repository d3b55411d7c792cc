"""trainlab shard FOLDER --out DIR --size 1GB: write a folder data set (one sub-folder per class) as
WebDataset tar shards, read back by the shards data set (data.name=shards, data.urls=...)."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("folder", help="folder of class sub-folders holding PNG/JPEG images (as data.root of the folder "
                                  "data set)")
    p.add_argument("--out", required=True, help="directory the shards and classes.json are written to")
    p.add_argument("--size", default="1GB", help="largest shard size (1GB, 500MB, 64MiB; default 1GB)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample order (shards mix the classes)")
    p.add_argument("--follow-links", action="store_true", help="read symbolic links leaving FOLDER")


def run(args) -> int:
    from pathlib import Path

    from ..errors import DataError
    from ..data.shards import parse_size, write_shards

    folder, out = Path(args.folder).expanduser(), Path(args.out).expanduser()
    max_bytes = parse_size(args.size)
    if out.exists() and any(out.glob("shard-*.tar")):
        raise DataError(f"--out: {out} already holds shards; choose an empty directory")
    shards, count = write_shards(folder, out, max_bytes, args.seed, args.follow_links)
    last = shards[-1].name if shards else "shard-000000.tar"
    print(f"{count} samples in {len(shards)} shard(s) under {out}; train on them with data.name=shards "
          f"data.urls='{out}/shard-{{000000..{last[6:12]}}}.tar' (served from a URL, they are streamed: "
          f"data.urls='http://HOST/PATH/shard-{{000000..{last[6:12]}}}.tar' data.epoch_samples={count}, with "
          "classes.json beside them)")
    return 0
