"""A rendered scene's variant with realistic SfM points: triangulated from its defocused training
photos with the known poses, instead of the points back-projected from sharp depth that it ships.

    python benchmarks/triangulated_scene.py ../shared/data/synthetic_defocus_dev /tmp/dev_tri

OUT links every file of SCENE except its points: ``sparse/0`` is the triangulated COLMAP model
(text) and ``sparse_pc.ply`` the same points. SIFT finds features mostly where a photo is in focus,
so the points are sparser and biased to each photo's focus plane, as a user's COLMAP run on
defocused photos gives (issue 12). SCENE: the LLFF layout with ``sparse/0`` holding the exact
poses (one shared camera) and ``hold=N`` naming the test views.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import List, Optional

from cocogs_nerfstudio.dataparser import find_hold, image_folder, list_images, split_indices
from cocogs_nerfstudio.process import triangulate_with_poses, write_points_ply

POINT_FILES = ("sparse", "sparse_pc.ply")


def make_variant(scene: Path, out: Path, max_image_size: int = 1000, log=print) -> dict:
    """Write the variant to ``out`` (replaced); returns a summary (points, reprojection error)."""
    import pycolmap

    hold = find_hold(scene)
    if hold is None:
        raise SystemExit(f"{scene}: no hold=N file naming the test views")
    images = image_folder(scene, None)
    names = [p.name for p in list_images(images)]
    train = [names[i] for i in split_indices(len(names), hold)[0]]
    known = pycolmap.Reconstruction(scene / "sparse" / "0")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for entry in scene.iterdir():
        if entry.name not in POINT_FILES:
            (out / entry.name).symlink_to(entry.resolve())
    triangulated = triangulate_with_poses(images, out / "triangulation", known, train, max_image_size, log=log)
    (out / "sparse" / "0").mkdir(parents=True)
    triangulated.write_text(out / "sparse" / "0")
    write_points_ply(triangulated, out / "sparse_pc.ply")
    shutil.rmtree(out / "triangulation")
    summary = {
        "scene": str(scene), "training_photos": len(train), "points": triangulated.num_points3D(),
        "shipped_points": known.num_points3D(),
        "mean_reprojection_error_px": round(triangulated.compute_mean_reprojection_error(), 3),
    }  # fmt: skip
    (out / "triangulation.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scene", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-image-size", type=int, default=1000)
    parser.add_argument("--verbose", action="store_true", help="show COLMAP's own log")
    args = parser.parse_args(argv)
    if not args.verbose:
        import pycolmap

        pycolmap.logging.minloglevel = pycolmap.logging.ERROR
    print(json.dumps(make_variant(args.scene.resolve(), args.out, args.max_image_size), indent=1))


if __name__ == "__main__":
    main()
