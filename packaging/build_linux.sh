#!/usr/bin/env bash
# Build Nibble's Linux bundle: dist/nibble/ (one folder), dist/nibble-<version>-linux-<arch>.tar.gz,
# and dist/Nibble-<version>-<arch>.AppImage when appimagetool is on PATH.
#
#   bash packaging/build_linux.sh
#
# PyInstaller goes into a build environment (NIBBLE_BUILD_VENV, default /tmp/nibble-build-venv) that
# sees the Python packages Nibble runs with (--system-site-packages), so the bundle holds exactly the
# torch, PySide6 and llama-cpp-python installed here: install those first (README, "Set up"), with
# CMAKE_ARGS for a CUDA or Vulkan build of llama-cpp-python if the bundle should have one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${NIBBLE_BUILD_VENV:-/tmp/nibble-build-venv}

if [ ! -x "$VENV/bin/pyinstaller" ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
    "$VENV/bin/python" -m pip install --quiet "pyinstaller>=6.11"
fi
"$VENV/bin/python" -c "import llama_cpp, torch, PySide6" \
    || { echo "build_linux.sh: install Nibble's dependencies first (README, Set up)" >&2; exit 1; }

VERSION=$("$VENV/bin/python" -c "import engine; print(engine.__version__)")
ARCH=$(uname -m)
started=$(date +%s)
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
    --distpath "$ROOT/dist" --workpath "$ROOT/build/pyinstaller" packaging/nibble.spec
built=$(date +%s)

# Desktop integration files beside the program, where AppImage tools and installers expect them.
cp resources/nibble.desktop dist/nibble/nibble.desktop
cp resources/icons/nibble.svg dist/nibble/nibble.svg
cp resources/icons/png/nibble-256.png dist/nibble/nibble.png

TARBALL="dist/nibble-$VERSION-linux-$ARCH.tar.gz"
tar -C dist -czf "$TARBALL" nibble
echo "bundle:  dist/nibble/nibble ($(du -sh dist/nibble | cut -f1))"
echo "archive: $TARBALL ($(du -sh "$TARBALL" | cut -f1))"

if command -v appimagetool >/dev/null 2>&1; then
    APPDIR=build/Nibble.AppDir
    rm -rf "$APPDIR" && mkdir -p "$APPDIR/usr"
    cp -a dist/nibble "$APPDIR/usr/nibble"
    cp resources/nibble.desktop "$APPDIR/nibble.desktop"
    cp resources/icons/png/nibble-256.png "$APPDIR/nibble.png"
    cat > "$APPDIR/AppRun" <<'RUN'
#!/bin/sh
HERE=$(dirname "$(readlink -f "$0")")
exec "$HERE/usr/nibble/nibble" "$@"
RUN
    chmod +x "$APPDIR/AppRun"
    ARCH=$ARCH appimagetool "$APPDIR" "dist/Nibble-$VERSION-$ARCH.AppImage"
    echo "appimage: dist/Nibble-$VERSION-$ARCH.AppImage"
else
    echo "appimagetool is not on PATH: no AppImage made (the folder and the tar.gz are the bundle)"
fi
echo "pyinstaller took $((built - started)) s"
