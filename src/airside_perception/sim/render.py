"""Pictures of a labelled scan: bird's-eye and side views coloured by class (matplotlib)."""

from __future__ import annotations

from airside_perception import classes
from airside_perception.sim.world import Scan


def render_views(scan: Scan, bev_path: str, side_path: str, range_m: float = 60.0) -> None:
    """Writes a bird's-eye view and a side view of ``scan`` as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Polygon

    pts, labels = scan.points, scan.labels
    colours = np.array([classes.CLASS_COLOURS[n] for n in classes.CLASS_NAMES])
    near = (np.abs(pts[:, 0]) < range_m) & (np.abs(pts[:, 1]) < range_m)
    order = np.argsort(labels[near] != classes.GROUND)[::-1][::-1]
    p, lab = pts[near][order], labels[near][order]

    fig, ax = plt.subplots(figsize=(10, 10), dpi=110)
    ax.scatter(p[:, 0], p[:, 1], s=0.3, c=colours[lab], linewidths=0)
    for box, label, n in zip(scan.boxes, scan.box_labels, scan.box_points):
        if n == 0 or label in (classes.STRUCTURE, classes.UNKNOWN):
            continue
        x, y, _, length, width, _, yaw = box
        c, s = np.cos(yaw), np.sin(yaw)
        corner = np.array([[length, width], [length, -width], [-length, -width], [-length, width]]) / 2
        xy = np.column_stack([x + c * corner[:, 0] - s * corner[:, 1], y + s * corner[:, 0] + c * corner[:, 1]])
        ax.add_patch(Polygon(xy, closed=True, fill=False, lw=0.6, ec=colours[label]))
    ax.plot(0, 0, marker=(3, 0, -90), ms=12, color="k")
    ax.set_xlim(-range_m, range_m)
    ax.set_ylim(-range_m, range_m)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, base_link)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"seed {scan.seed}: {len(pts)} points, {scan.traffic} apron"
                 f"{', wet' if scan.is_wet else ''}{', night' if scan.is_night else ''}")
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours[i], label=n)
               for i, n in enumerate(classes.CLASS_NAMES)]
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    fig.savefig(bev_path, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(14, 4), dpi=110)
    band = near & (np.abs(pts[:, 1]) < 25.0)
    ax.scatter(pts[band, 0], pts[band, 2], s=0.3, c=colours[labels[band]], linewidths=0)
    ax.set_xlim(-range_m, range_m)
    ax.set_ylim(-2, 16)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.set_title("side view, |y| < 25 m")
    fig.savefig(side_path, bbox_inches="tight")
    plt.close(fig)
