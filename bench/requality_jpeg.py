"""Re-encode a JPEG class-folder dataset at another JPEG quality, to measure how
much an experiment's accuracy depends on the compression of its images (issue
10: the CIFAR-10 here is JPEG at quality 75, 4:2:0 chroma; the published
figures are on the lossless originals). Not a test; never commits data.

    /usr/bin/python3 bench/requality_jpeg.py ../shared/data/cifar10-jpg /tmp/cifar10-q50 --quality 50
    build/bin/cbnet run experiments/fast_lt.lua --budget 15 --seeds 0,1,2 --data /tmp/cifar10-q50

Every image is decoded (libjpeg, through Pillow) and written again with
libjpeg's tables scaled to --quality and 4:2:0 chroma, as the source files were
written at 75; the folder layout and file names are kept."""
import argparse
import os

from PIL import Image


def main():
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--quality", type=int, default=50)
    args = p.parse_args()
    if not 1 <= args.quality <= 95:
        p.error("--quality must be in 1..95, got %d" % args.quality)
    count = 0
    for split in ("train", "test"):
        for cls in sorted(os.listdir(os.path.join(args.src, split))):
            src_dir = os.path.join(args.src, split, cls)
            dst_dir = os.path.join(args.dst, split, cls)
            os.makedirs(dst_dir, exist_ok=True)
            for name in sorted(os.listdir(src_dir)):
                with Image.open(os.path.join(src_dir, name)) as im:
                    im.convert("RGB").save(os.path.join(dst_dir, name), "JPEG",
                                           quality=args.quality, subsampling=2)
                count += 1
    print("wrote %d images at quality %d to %s" % (count, args.quality, args.dst))


if __name__ == "__main__":
    main()
