# session-25 device jobs (not committed): `bash devrun.sh start` installs and launches; `bash devrun.sh wait S` waits
set -u
L=/tmp/run/logs
collect() { cp $L/*.log $OUT/ 2>/dev/null; for j in a b c; do cp /tmp/run/out_$j/fanin_split.json $OUT/$j.json 2>/dev/null; done; cp /tmp/run/out_gw/gpu_workers.json $OUT/ 2>/dev/null; nvidia-smi --query-gpu=memory.used --format=csv,noheader; free -g | head -2; true; }
if [ "$1" = start ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  python3 -m pip install -q --no-deps --no-build-isolation --no-index --target /tmp/site . || exit 1
  mkdir -p /tmp/run $L && cp -r benchmarks /tmp/run/
  cat > /tmp/run/env.sh <<'E2'
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
cd /tmp/run
E2
  cd /tmp/run
  setsid bash -c 'source /tmp/run/env.sh; python3 -m benchmarks.gpu_workers --out out_gw --gpus 1 --images 512 --T 8 > logs/gw.log 2>&1; python3 -m benchmarks.fanin_split --out out_a --nets resnet34 --targets loihi --device cuda --backend torch --T 8 --price 4 > logs/a.log 2>&1' < /dev/null &
  setsid bash -c 'source /tmp/run/env.sh; python3 -m benchmarks.fanin_split --out out_b --nets vit-s16 --targets loihi --device cuda --backend torch --T 4 --price 4 --no-hypothetical --keep /tmp/keep > logs/b.log 2>&1' < /dev/null &
  setsid bash -c 'source /tmp/run/env.sh; python3 -m benchmarks.fanin_split --out out_c --nets cifar-vgg16 --targets truenorth --device cuda --backend torch --T 8 --price 4 > logs/c.log 2>&1' < /dev/null &
  cd - > /dev/null
  shift; set -- wait "$@"
fi
if [ "$1" = wait ]; then
  end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do
    sleep 10
    n=$(pgrep -f "benchmarks\.(fanin_split|gpu_workers)" | wc -l)
    [ "$n" = 0 ] && break
  done
  collect; tail -n 4 $L/*.log; echo "running: $(pgrep -f 'benchmarks\.(fanin_split|gpu_workers)' | wc -l)"
fi
