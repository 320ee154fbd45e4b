# Sourced by gpu_train.sh and the window scripts: makes `import moldiff, hydra, omegaconf` work on a bare machine.
# Installs hydra-core, omegaconf and antlr4-python3-runtime from a local wheel folder (default .whl/ in the
# repository, or $MOLDIFF_WHEELS) into $TMPDIR/moldiff-site when they are missing, and puts that folder and
# the repository on PYTHONPATH (no install of moldiff needed). Uses $PYTHON (default python3); needs $root.
py="${PYTHON:-python3}"
if ! "$py" -c "import hydra, omegaconf" 2>/dev/null; then
  wheels="${MOLDIFF_WHEELS:-$root/.whl}"
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "moldiff: hydra-core/omegaconf are not installed and $wheels holds no wheels (see docs/gpu_training.md)" >&2
    exit 2
  fi
  site="${TMPDIR:-/tmp}/moldiff-site"
  "$py" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
case ":${PYTHONPATH:-}:" in
  *":$root:"*) ;;
  *) export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" ;;
esac

# Helpers of the window scripts: `scaled X` prints X * $SCALE (dry runs), `scaled_count N` the same rounded to a
# count of at least 2, `start_gpu_monitor FILE` appends `nvidia-smi dmon` readings to FILE in the background (its
# pid in $dmon) when there is a GPU.
scaled() { "$py" -c "print(round($1 * ${SCALE:-1}, 3))"; }
scaled_count() { "$py" -c "print(max(2, round($1 * ${SCALE:-1})))"; }
start_gpu_monitor() {
  if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
    nvidia-smi dmon -s um -d 10 >>"$1" 2>&1 &
    dmon=$!
  fi
}
