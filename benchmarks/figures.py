"""Which figures of which recorded benchmark run the docs show, and how.

Each :class:`Figure` reads one value (or a few) out of a run's final JSON line, as recorded by
``simclr bench --record NAME`` in ``benchmarks/results/NAME.json``; ``scripts/gen_docs.py`` writes
``docs/benchmarks.md`` (every figure) and the README's table (those with ``readme=True``) from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EDITS = ("crop", "flip", "rotation", "colour", "blur", "jpeg", "noise")


@dataclass(frozen=True)
class Figure:
    section: str
    label: str
    run: str  # the results file's stem: NAME or NAME--LABEL
    value: Callable[[dict[str, Any]], str]
    readme: bool = False


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def _per_edit(scores: dict[str, float]) -> str:
    return ", ".join(f"{e} {scores[e]:.3f}" for e in EDITS if e in scores)


def _families(scores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in scores.items())


def _denoise(result: dict[str, Any], dataset: str, key: str) -> str:
    rows = [q for q in result["quality"] if q["set"] == dataset]
    return " / ".join(f"{q[key]:.2f}" for q in sorted(rows, key=lambda q: q["sigma"]))


def _sigmas(result: dict[str, Any], dataset: str) -> str:
    rows = [q for q in result["quality"] if q["set"] == dataset]
    return " / ".join(f"{q['sigma']:g}" for q in sorted(rows, key=lambda q: q["sigma"]))


FIGURES: list[Figure] = [
    # -- training -------------------------------------------------------------------------------
    Figure(
        "Training",
        "SimCLR, compact encoder, CIFAR-10 train, time budget: kNN top-1 on CIFAR-10 test",
        "quality",
        lambda r: (
            f"**{100 * r['knn_top1']:.1f}%** after {r['epochs']:.1f} epochs in "
            f"{r['minutes']:.1f} min at {_rate(r['train_images_per_s'])} images/s (random init "
            f"{100 * r['random_init_knn_top1']:.1f}%)"
        ),
        readme=True,
    ),
    Figure(
        "Training",
        "training images/s (two views each), ours bf16 / ours fp32 / lightly, batch as run",
        "throughput",
        lambda r: "; ".join(
            f"{name} {_rate(r[name]['ours_images_per_s'])} / "
            f"{_rate(r[name]['ours_fp32_images_per_s'])} / {_rate(r[name]['lightly_images_per_s'])}"
            f" ({r[name]['speedup_vs_lightly']:.2f}x lightly)"
            for name in ("resnet18", "compact")
            if name in r
        ),
        readme=True,
    ),
    Figure(
        "Training",
        "CPU matrix-product peak, fp32 / bf16 (GFLOP/s)",
        "throughput",
        lambda r: f"{r['peak_gflops']['fp32']:.0f} / {r['peak_gflops']['bf16']:.0f}",
    ),
    Figure(
        "Training",
        "compact encoder training step, oneDNN vs im2col weight gradient (ms per step)",
        "conv_grad",
        lambda r: "; ".join(
            f"{side} px views {v['onednn_ms']:.0f} vs {v['im2col_ms']:.0f}"
            for side, v in sorted(r["steps"].items())
        ),
    ),
    # -- export and inference ----------------------------------------------------------------------
    Figure(
        "Inference",
        "compact encoder images/s, batch 1 / 32: PyTorch eager, ONNX Runtime fp32, INT8",
        "export",
        lambda r: "eager {} / {}, ORT fp32 {} / {}, INT8 {} / {}".format(
            *(
                _rate(r["compact"][f"{k}_{b}_images_per_s"])
                for k in ("pytorch_eager", "onnxruntime_fp32", "onnxruntime_int8")
                for b in ("b1", "b32")
            )
        ),
        readme=True,
    ),
    Figure(
        "Inference",
        "ResNet-18 (32 px) images/s, batch 1 / 32: PyTorch eager, ONNX Runtime fp32, INT8",
        "export",
        lambda r: (
            "eager {} / {}, ORT fp32 {} / {}, INT8 {} / {}".format(
                *(
                    _rate(r["resnet18"][f"{k}_{b}_images_per_s"])
                    for k in ("pytorch_eager", "onnxruntime_fp32", "onnxruntime_int8")
                    for b in ("b1", "b32")
                )
            )
            if "resnet18" in r
            else "not measured"
        ),
    ),
    # -- search ------------------------------------------------------------------------------------
    Figure(
        "Search quality",
        "CIFAR-10 reverse image search, mean top-1 over the 7 edits whitening was fitted on",
        "search_quality",
        lambda r: (
            f"**{r['ours_mean']:.4f}** (pHash {r['phash_mean']:.3f}), {r['queries']:,} queries "
            f"per edit over {r['indexed']:,} images"
        ),
        readme=True,
    ),
    Figure(
        "Search quality",
        "the same, top-1 per edit: ours",
        "search_quality",
        lambda r: _per_edit(r["ours"]),
    ),
    Figure(
        "Search quality",
        "the same, top-1 per edit: pHash",
        "search_quality",
        lambda r: _per_edit(r["phash"]),
    ),
    Figure(
        "Copy detection",
        "photos, edited copies of 19 families among distractors, through the server: micro-AP / "
        "recall at 90% precision / mean top-1 (worst family); pHash; PDQ",
        "copy_detection",
        lambda r: (
            f"**{r['ours']['micro_ap']:.3f} / {r['ours']['recall_at_p90']:.3f} / "
            f"{r['ours']['mean_top1']:.3f}** ({r['ours']['min_top1']:.2f}); pHash "
            f"{r['phash']['micro_ap']:.3f} / {r['phash']['recall_at_p90']:.3f} / "
            f"{r['phash']['mean_top1']:.3f}; PDQ {r['pdq']['micro_ap']:.3f} / "
            f"{r['pdq']['recall_at_p90']:.3f} / {r['pdq']['mean_top1']:.3f} "
            f"({r['queries']:,} queries, {r['negative_queries']:,} without a match, "
            f"{r['indexed']:,} indexed)"
        ),
    ),
    Figure(
        "Copy detection",
        "photo copy detection through the server, 19 edit families: micro-AP / recall at P90",
        "copy_detection",
        lambda r: (
            f"**{r['ours']['micro_ap']:.3f} / {r['ours']['recall_at_p90']:.3f}** (pHash "
            f"{r['phash']['micro_ap']:.3f} / {r['phash']['recall_at_p90']:.3f}, PDQ "
            f"{r['pdq']['micro_ap']:.3f} / {r['pdq']['recall_at_p90']:.3f})"
        ),
        readme=True,
    ),
    Figure(
        "Copy detection",
        "top-1 per edit family: ours",
        "copy_detection",
        lambda r: _families(r["ours"]["top1"]),
    ),
    Figure(
        "Copy detection",
        "top-1 per edit family: pHash / PDQ",
        "copy_detection",
        lambda r: "; ".join(
            f"{f} {r['phash']['top1'][f]:.2f} / {r['pdq']['top1'][f]:.2f}"
            for f in r["phash"]["top1"]
        ),
    ),
    Figure(
        "Copy detection",
        "what each part buys (each variant calibrated alone; the quick set, through the service "
        "core): micro-AP / recall at 90% precision / worst family top-1",
        "copy_detection--ablation",
        lambda r: "; ".join(
            f"{v['variant']} {v['micro_ap']:.3f} / {v['recall_at_p90']:.3f} / {v['min_top1']:.2f}"
            for v in (
                r["ablation"]
                if isinstance(r["ablation"], list)
                else [{"variant": k, **v} for k, v in r["ablation"].items()]
            )
        ),
    ),
    Figure(
        "Copy detection",
        "the stored vector, embedding alone on the calibration split (no local features): centre "
        "square / mean of the squares covering the picture, top-1 / micro-AP per edit seed",
        "stored_view",
        lambda r: "; ".join(
            f"seed {seed}: "
            + " / ".join(
                f"{r['calibration_split'][f'{p}_seed{seed}']['top1']:.3f}"
                for p in ("centre", "tiles")
            )
            + ", "
            + " / ".join(
                f"{r['calibration_split'][f'{p}_seed{seed}']['micro_ap']:.3f}"
                for p in ("centre", "tiles")
            )
            for seed in sorted({int(k.rsplit("seed", 1)[1]) for k in r["calibration_split"]})
        ),
    ),
    Figure(
        "Copy detection",
        "the CIFAR-10 benchmark's 7 edits through the server's search by image: top-1",
        "copy_detection",
        lambda r: (
            f"mean {r['cifar']['mean_top1']:.4f}; "
            + _per_edit(r["cifar"]["top1"])
            + f" ({r['cifar']['queries_per_edit']} queries per edit over {r['cifar']['indexed']:,})"
            + (
                f"; with copy detection off, the same queries: mean "
                f"{r['cifar_plain_search']['mean_top1']:.4f}; "
                + _per_edit(r["cifar_plain_search"]["top1"])
                if "cifar_plain_search" in r
                else ""
            )
            if "cifar" in r
            else "not measured"
        ),
    ),
    Figure(
        "Copy detection",
        "is_copy at the calibrated threshold: precision / recall",
        "copy_detection",
        lambda r: f"{r['is_copy_precision']:.3f} / {r['is_copy_recall']:.3f}",
    ),
    Figure(
        "Copy detection",
        "12-megapixel JPEGs: Search by image p50 / p95 (photos in the index and crops of them), "
        "p50 for photos not in the index, p50 of all; IndexImages photos/s; store bytes per photo",
        "copy_detection",
        lambda r: (
            f"{r['search_ms_12mp_p50']:.0f} / {r['search_ms_12mp_p95']:.0f} ms, "
            + (
                f"{r['search_ms_12mp_not_indexed_p50']:.0f} ms, "
                f"{r['search_ms_12mp_all_p50']:.0f} ms; "
                if "search_ms_12mp_not_indexed_p50" in r
                else "not indexed: not measured; "
            )
            + f"{r['index_12mp_photos_per_s']:.1f} photos/s; "
            + (
                f"{r['store_bytes_per_photo']:,} B per photo on disk"
                if "store_bytes_per_photo" in r
                else f"{r['store_bytes_per_item']:,} B per item on disk (photos and icons)"
            )
            + f", of which {r['index_ram_bytes_per_item']:,} B of vectors in RAM"
            + (
                f" and {r['vote_ram_bytes_per_photo']:,} B of vote codes"
                if "vote_ram_bytes_per_photo" in r
                else ""
            )
        ),
    ),
    Figure(
        "Copy detection",
        "12-megapixel JPEG: Search by image p50 (all queries); IndexImages",
        "copy_detection",
        lambda r: (
            f"{r.get('search_ms_12mp_all_p50', r['search_ms_12mp_p50']):.0f} ms; "
            f"{r['index_12mp_photos_per_s']:.1f} photos/s"
        ),
        readme=True,
    ),
    # -- duplicates --------------------------------------------------------------------------------
    Figure(
        "Duplicates",
        "labelled photo library (originals, edited and identical copies, distinct photos and "
        "CIFAR-10 images), FindDuplicates through the server: pair precision / recall / F1",
        "dedup",
        lambda r: (
            f"**{r['ours']['precision']:.3f} / {r['ours']['recall']:.3f} / {r['ours']['f1']:.3f}**"
            f" in {r['ours']['seconds']:.1f} s ({r['files']} files, {r['true_pairs']} true pairs"
            f" in {r['true_groups']} groups)"
        ),
    ),
    Figure(
        "Duplicates",
        "imagededup on the same library, at its default threshold and at the one best on the dev "
        "library: PHash / CNN F1",
        "dedup",
        lambda r: (
            f"PHash {r['phash']['f1']:.3f} (distance {r['phash']['threshold']}) / "
            f"{r['phash_dev_tuned']['f1']:.3f} ({r['phash_dev_tuned']['threshold']:g}); CNN "
            f"{r['cnn']['f1']:.3f} ({r['cnn']['threshold']}) / {r['cnn_dev_tuned']['f1']:.3f} "
            f"({r['cnn_dev_tuned']['threshold']:g}); CNN features: {r['cnn_model']}"
        ),
    ),
    Figure(
        "Duplicates",
        "photo duplicates through the server: pair F1 (imagededup PHash / CNN, best threshold)",
        "dedup",
        lambda r: (
            f"**{r['ours']['f1']:.3f}** ({r['phash_dev_tuned']['f1']:.3f} / "
            f"{r['cnn_dev_tuned']['f1']:.3f})"
        ),
        readme=True,
    ),
    Figure(
        "Duplicates",
        "FindDuplicates over an embedded collection, through the server: seconds",
        "dedup",
        lambda r: (
            f"{r['scale']['seconds']:.0f} s for {r['scale']['items']:,} items"
            if "scale" in r
            else "not measured (--quick)"
        ),
        readme=True,
    ),
    # -- HTTP ----------------------------------------------------------------------------------------
    Figure(
        "HTTP",
        "Search over HTTP/JSON beside gRPC, one client, one server: p50 / p99 by vector (k 10); by "
        "image (CIFAR-10 JPEG, copy detection)",
        "http",
        lambda r: (
            f"HTTP {r['http_vector']['p50']:.1f} / {r['http_vector']['p99']:.1f} ms, gRPC "
            f"{r['grpc_vector']['p50']:.1f} / {r['grpc_vector']['p99']:.1f} ms; HTTP "
            f"{r['http_image']['p50']:.1f} / {r['http_image']['p99']:.1f} ms, gRPC "
            f"{r['grpc_image']['p50']:.1f} / {r['grpc_image']['p99']:.1f} ms "
            f"({r['queries']} queries each over {r['indexed']:,} images)"
        ),
    ),
    Figure(
        "HTTP",
        "Search p50, HTTP/JSON / gRPC: by vector; by image",
        "http",
        lambda r: (
            f"{r['http_vector']['p50']:.1f} / {r['grpc_vector']['p50']:.1f} ms; "
            f"{r['http_image']['p50']:.1f} / {r['grpc_image']['p50']:.1f} ms"
        ),
        readme=True,
    ),
    # -- Ray ---------------------------------------------------------------------------------------
    Figure(
        "Ray",
        "`simclr index --ray` / local, images/s, one node: CIFAR-10; photos (ratio; without start-up)",
        "ray",
        lambda r: "; ".join(
            f"{lib} {_rate(max(v['ray_images_per_s']))} / {_rate(max(v['local_images_per_s']))}"
            f" ({v['ratio']:.2f}; {v['ratio_running']:.2f}), {v['images']:,} images"
            for lib, v in r["libraries"].items()
        ),
        readme=True,
    ),
    Figure(
        "Ray",
        "Ray job start-up (shard and encoder actors, 16 images); nodes like this one (2 cores) to"
        " index 100 million images a day on Ray, from the rate without start-up",
        "ray",
        lambda r: (
            f"{r['ray_job_fixed_s']:.1f} s; "
            + "; ".join(
                f"{lib} ({v['megapixels']:.1f} MP): {v['nodes_for_100M_per_day']}"
                f" node{'s' if v['nodes_for_100M_per_day'] != 1 else ''}"
                f" ({_rate(v['ray_running_images_per_s'])} images/s a node)"
                for lib, v in r["libraries"].items()
            )
        ),
    ),
    # -- service -----------------------------------------------------------------------------------
    Figure(
        "Service",
        "gRPC Embed, 16 images per call, 8 / 32 clients (share of in-process ONNX Runtime)",
        "service",
        lambda r: (
            f"{_rate(r['grpc_images_per_s_8_clients_16_per_call'])} / "
            f"{_rate(r['grpc_images_per_s_32_clients_16_per_call'])} images/s "
            f"({r['grpc_vs_in_process_32_batched']:.2f} of {_rate(r['in_process_images_per_s'])} "
            "in-process at 32)"
        ),
        readme=True,
    ),
    Figure(
        "Service",
        "gRPC Embed, one image per call, 1 / 8 / 32 clients",
        "service",
        lambda r: (
            " / ".join(_rate(r[f"grpc_images_per_s_{n}_clients"]) for n in (1, 8, 32))
            + f" images/s ({r['grpc_vs_in_process_32']:.2f} of in-process at 32)"
        ),
    ),
    Figure(
        "Service",
        "gRPC EmbedStream, one image per message, 1 / 8 / 32 clients",
        "service",
        lambda r: (
            " / ".join(_rate(r[f"grpc_stream_images_per_s_{n}_clients"]) for n in (1, 8, 32))
            + f" images/s ({r['grpc_vs_in_process_32_stream']:.2f} of in-process at 32)"
        ),
    ),
    Figure(
        "Service",
        "latency p50 / p99: Embed; Search by vector (both 100/s); Search by image (copy detection)",
        "service",
        lambda r: (
            "; ".join(
                f"{r[k]['p50_ms']:.1f} / {r[k]['p99_ms']:.1f} ms"
                for k in ("embed_latency", "search_latency")
            )
            + f"; {r['search_image_latency']['p50_ms']:.1f} / {r['search_image_latency']['p99_ms']:.1f}"
            f" ms at {r['search_image_latency']['rate_per_s']:g}/s"
        ),
        readme=True,
    ),
    Figure(
        "Service",
        "Search by vector, 8 clients",
        "service",
        lambda r: (
            f"{_rate(r['search_qps_8_clients'])} queries/s over "
            f"{r['indexed_vectors']:,} vectors ({r['search_index']['kind']})"
        ),
    ),
    Figure(
        "Service",
        "`simclr index` end to end (share of the model alone)",
        "service",
        lambda r: f"{_rate(r['index_images_per_s'])} images/s ({r['index_vs_model_only']:.2f})",
        readme=True,
    ),
    Figure(
        "Service",
        "server resident memory",
        "service",
        lambda r: f"{r['server_rss_mb']:.0f} MB with {r['indexed_vectors']:,} vectors",
    ),
    Figure(
        "Service",
        "Python gRPC alone (echo, 1.5 KB): CPU per message at 32 clients, unary / stream",
        "grpc_transport",
        lambda r: f"{r['unary_cpu_ms_per_message']:.2f} / {r['stream_cpu_ms_per_message']:.2f} ms",
    ),
    # -- index -------------------------------------------------------------------------------------
    Figure(
        "Index",
        "vector index at recall@10 >= target: recall, queries/s one at a time (1 thread), "
        "bytes per vector",
        "index",
        lambda r: (
            f"{r['n']:,} x {r['dim']}: "
            + "; ".join(
                f"{kind} {v['recall_at_10']:.3f}, {_rate(v['qps_single_1t'])} q/s, "
                f"{v['bytes_per_vector']:.0f} B"
                for kind, v in r["results"].items()
            )
        ),
    ),
    Figure(
        "Index",
        "durable adds (SQLite WAL + fsync per batch of 1,000, then FAISS)",
        "index",
        lambda r: f"{_rate(r['durable_adds_per_s'])} vectors/s",
    ),
    # -- denoiser ----------------------------------------------------------------------------------
    Figure(
        "Denoiser",
        "Kodak24, blind, mean PSNR (dB) by sigma: ours / 4-pass ensemble / non-local means",
        "denoise",
        lambda r: (
            f"sigma {_sigmas(r, 'Kodak24')}: {_denoise(r, 'Kodak24', 'ours_blind')} / "
            f"{_denoise(r, 'Kodak24', 'ours_blind_x4')} / {_denoise(r, 'Kodak24', 'nlm')} "
            f"(published CBM3D {_denoise(r, 'Kodak24', 'published_CBM3D')})"
        ),
        readme=True,
    ),
    Figure(
        "Denoiser",
        "CBSD68, blind, mean PSNR (dB) by sigma: ours / 4-pass ensemble / non-local means",
        "denoise",
        lambda r: (
            f"sigma {_sigmas(r, 'CBSD68')}: {_denoise(r, 'CBSD68', 'ours_blind')} / "
            f"{_denoise(r, 'CBSD68', 'ours_blind_x4')} / {_denoise(r, 'CBSD68', 'nlm')} "
            f"(published CBM3D {_denoise(r, 'CBSD68', 'published_CBM3D')})"
        ),
    ),
    Figure(
        "Denoiser",
        "against CBM3D run here on the same images (dB): ours / ensemble / CBM3D, Kodak24 by sigma",
        "denoise",
        lambda r: (
            f"{_denoise(r, 'Kodak24', 'ours_blind_subset')} / "
            f"{_denoise(r, 'Kodak24', 'ours_blind_x4_subset')} / "
            f"{_denoise(r, 'Kodak24', 'cbm3d_subset')}"
        ),
    ),
    Figure(
        "Denoiser",
        "seconds per image: ONNX Runtime, 4-pass ensemble, CBM3D",
        "denoise",
        lambda r: (
            f"{r['speed']['onnxruntime_seconds']:.3f} / "
            f"{r['speed']['onnxruntime_x4_seconds']:.3f} / {r['speed']['cbm3d_seconds']:.1f} s at "
            f"{r['speed']['size']} px ({r['speed']['onnx_speedup_vs_cbm3d']:.0f}x CBM3D)"
        ),
    ),
    Figure(
        "Denoiser",
        "clean photos in, blind: PSNR of the output against the input (largest colour shift)",
        "denoise",
        lambda r: "; ".join(
            f"{name} {v['psnr']:.1f} dB ({v['max_colour_shift']:.2f} levels)"
            for name, v in r["clean_input"].items()
        ),
    ),
    Figure(
        "Denoiser",
        "a 16 px mirrored border, sigma 25 blind (dB without / with)",
        "denoise_border",
        lambda r: "; ".join(
            f"{name} {v['0']:.2f} / {v['16']:.2f}" for name, v in r["psnr"].items()
        ),
    ),
]
