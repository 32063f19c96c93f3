//! `oubli synth`: generate a seeded synthetic population, enrol it, and measure its scores.
use std::{fs, io::Write, path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use oubli::synth::{
    Population, PopulationConfig, files, plot,
    stats::{Scores, Summary},
};

use super::{connect, enroll_all, read_records};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Write a population: embeddings.npy, provenance.jsonl, labels.npy, probes.npy,
    /// probe_labels.npy and population.json (which regenerates it).
    Generate {
        /// People in the population [default: 10000, or --config's].
        #[arg(long)]
        identities: Option<usize>,
        /// Enrolled photos of each person [default: 5, or --config's].
        #[arg(long)]
        samples_per_identity: Option<usize>,
        /// Held-out samples ("selfies") per identity, for access and erasure requests
        /// [default: 1, or --config's].
        #[arg(long)]
        probes_per_identity: Option<usize>,
        /// [default: 1, or --config's]
        #[arg(long)]
        seed: Option<u64>,
        /// Share of identities with a look-alike relative (twins, siblings).
        #[arg(long)]
        lookalike_share: Option<f64>,
        /// A population.json to start from (every setting, seed included); flags override it.
        /// `--config DIR/population.json` alone regenerates DIR byte for byte.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Enrol a generated population's samples through EnrollStream; writes record_ids.txt.
    Enroll {
        dir: PathBuf,
        /// Records per stream (each stream is one atomic, durable write).
        #[arg(long, default_value_t = 5000)]
        batch: usize,
    },
    /// Genuine and impostor score statistics: thresholds, error rates, DET curve, histogram.
    Stats {
        dir: PathBuf,
        /// Impostor pairs to sample (at least 1e7 to measure FMR 1e-6).
        #[arg(long, default_value_t = 20_000_000)]
        impostor_pairs: usize,
        /// At most this many genuine pairs.
        #[arg(long, default_value_t = 2_000_000)]
        genuine_pairs: usize,
        /// Seed of the pair sampling.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write stats.json and the plots (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn run(command: Command, server: &str, json: bool) -> Result<()> {
    match command {
        Command::Generate {
            identities,
            samples_per_identity,
            probes_per_identity,
            seed,
            lookalike_share,
            config,
            out,
        } => {
            let mut config: PopulationConfig = match config {
                Some(path) => {
                    serde_json::from_slice(&fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?)
                        .with_context(|| format!("{}: not a population configuration", path.display()))?
                }
                None => PopulationConfig { identities: 10_000, ..PopulationConfig::default() },
            };
            config.identities = identities.unwrap_or(config.identities);
            config.samples_per_identity = samples_per_identity.unwrap_or(config.samples_per_identity);
            config.probes_per_identity = probes_per_identity.unwrap_or(config.probes_per_identity);
            config.seed = seed.unwrap_or(config.seed);
            if let Some(share) = lookalike_share {
                config.model.lookalike_share = share;
            }
            let started = Instant::now();
            let population = Population::generate(&config)?;
            let generated = started.elapsed().as_secs_f64();
            files::write(&population, &out)?;
            let total = population.len() + population.probe_count();
            eprintln!(
                "generated {} samples and {} probes of {} identities in {generated:.2} s ({:.0} per second); wrote {}",
                population.len(),
                population.probe_count(),
                config.identities,
                total as f64 / generated.max(1e-9),
                out.display()
            );
            Ok(())
        }
        Command::Enroll { dir, batch } => {
            let requests = read_records(&dir.join(files::EMBEDDINGS_FILE), Some(&dir.join(files::PROVENANCE_FILE)))?;
            let mut client = connect(server).await?;
            let path = dir.join("record_ids.txt");
            let mut out = std::io::BufWriter::new(
                fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?,
            );
            // Written as each stream is acknowledged, so a failure part-way loses no id.
            let result = enroll_all(&mut client, requests, batch, true, &mut |ids| {
                for id in ids {
                    writeln!(out, "{id}")?;
                }
                Ok(out.flush()?)
            })
            .await;
            eprintln!("record ids, in row order: {}", path.display());
            result.map(drop)
        }
        Command::Stats { dir, impostor_pairs, genuine_pairs, seed, out } => {
            let samples = files::read_matrix(&dir.join(files::EMBEDDINGS_FILE))?;
            let labels = files::read_labels(&dir.join(files::LABELS_FILE))?;
            let started = Instant::now();
            let flat = samples.as_standard_layout();
            let flat = flat.as_slice().context("embeddings are contiguous")?;
            let scores = Scores::sample(flat, &labels, samples.ncols(), seed, genuine_pairs, impostor_pairs)
                .with_context(|| format!("{}", dir.display()))?;
            let summary = scores.summary();
            let out = out.unwrap_or(dir);
            fs::create_dir_all(&out)?;
            let stats_path = out.join("stats.json");
            fs::write(&stats_path, serde_json::to_string_pretty(&summary)? + "\n")?;
            let mut written = vec![stats_path];
            written.extend(plot::det(&out, &scores, &summary)?);
            written.extend(plot::histogram(&out, &scores, &summary)?);
            if json {
                outln!("{}", serde_json::to_string(&summary)?);
            } else {
                print_summary(&summary);
            }
            eprintln!("measured in {:.1} s; wrote:", started.elapsed().as_secs_f64());
            for path in written {
                eprintln!("  {}", path.display());
            }
            Ok(())
        }
    }
}

fn print_summary(s: &Summary) {
    outln!(
        "genuine pairs (same person):   {:>9}  mean {:.3}  std {:.3}",
        s.genuine.pairs,
        s.genuine.mean,
        s.genuine.std
    );
    outln!(
        "impostor pairs (two people):   {:>9}  mean {:.3}  std {:.3}",
        s.impostor.pairs,
        s.impostor.mean,
        s.impostor.std
    );
    outln!("equal error rate: {:.2}% at threshold {:.3}", s.eer * 100.0, s.eer_threshold);
    outln!();
    outln!("false match rate   threshold   false non-match rate");
    for p in &s.operating_points {
        match (p.threshold, p.fnmr) {
            (Some(t), Some(fnmr)) => outln!("{:>16.0e}   {t:>9.3}   {:>19.2}%", p.fmr, fnmr * 100.0),
            _ => outln!("{:>16.0e}   (too few impostor pairs sampled to measure)", p.fmr),
        }
    }
}
