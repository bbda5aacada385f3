# The plots of docs/benchmarks.md, from the CSVs lstash-bench writes.
#   gnuplot -e "dir='bench/results'" bench/plots.gp
if (!exists("dir")) dir = 'bench/results'
set datafile separator ','
set terminal pngcairo size 800,480 noenhanced font ',10'
set key autotitle columnhead
set grid

set output dir.'/ring-det-cdf.png'
set title 'Ring, deterministic, f = 1: per-hop latency CDF'
set logscale x
set xlabel 'per-hop latency (us)'
set ylabel 'fraction of hops'
set key bottom right
plot for [i=2:5] dir.'/ring-det-cdf.csv' using i:1 with lines lw 2
unset logscale x

set output dir.'/recovery-timeline.png'
set title 'Ring, w1 killed at t = 0: hops per second (50 ms buckets)'
set xlabel 'time since the kill (ms)'
set ylabel 'hops per second'
set key top right
set xrange [-1000:3000]
plot dir.'/recovery-timeline-lineage-stash.csv' using 1:2 with steps lw 2 title 'lineage-stash', \
     dir.'/recovery-timeline-write-first.csv' using 1:2 with steps lw 2 title 'write-first', \
     dir.'/recovery-timeline-checkpoint.csv' using 1:2 with steps lw 2 title 'checkpoint'

set output dir.'/recovery-latency.png'
set title 'Ring, w1 killed at t = 0: median per-hop latency (50 ms buckets, by send time)'
set ylabel 'median latency (us)'
set logscale y
plot dir.'/recovery-timeline-lineage-stash.csv' using 1:($3 > 0 ? $3 : NaN) with steps lw 2 title 'lineage-stash', \
     dir.'/recovery-timeline-write-first.csv' using 1:($3 > 0 ? $3 : NaN) with steps lw 2 title 'write-first', \
     dir.'/recovery-timeline-checkpoint.csv' using 1:($3 > 0 ? $3 : NaN) with steps lw 2 title 'checkpoint'
unset logscale y
set autoscale x

set output dir.'/piggyback.png'
set title 'Bytes piggybacked per message, nondeterministic ring'
set xlabel 'f (peers each entry is forwarded to)'
set ylabel 'bytes per message'
set key top left
plot for [w in '0 100 1000 10000'] dir.'/piggyback-points.csv' using ($2 == w+0 ? $1 : NaN):4 with linespoints lw 2 title 'tasks of '.w.' us'

set output dir.'/recovery-lineage.png'
set title 'Recovery time against lineage since the last checkpoint'
set logscale xy
set xlabel 'tasks since the checkpoint'
set ylabel 'recovery (ms)'
set key top left
plot dir.'/recovery-lineage.csv' using 1:2 with linespoints lw 2 title 'gather + replay', \
     dir.'/recovery-lineage.csv' using 1:3 with linespoints lw 2 title 'gather'
