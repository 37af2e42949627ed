//! What goes with an image besides its manifests: its referrers (SBOMs, signatures,
//! provenance), and cosign-style digest tags.
use std::collections::HashMap;
use std::sync::Arc;

use regferry_config::{ReferrerFilter, SyncEntry};
use regferry_registry::repo::Repo;
use regferry_registry::{Content, Digest, Manifest, Result, TagList};
use regferry_transfer::{CopyOptions, Destination, ReferrerWalk};

use super::run_memo::RunMemo;
use super::{Decision, Engine, Item};
use crate::report::{ReferrerReport, State};

impl Engine {
    /// Where an image's referrers are read: `referrerSource` when set, else the source.
    pub(super) fn referrer_sources(&self, entry: &SyncEntry, item: &Item) -> Result<Vec<Repo>> {
        if entry.referrer_sources.is_empty() {
            return Ok(vec![item.src.clone()]);
        }
        entry
            .referrer_sources
            .iter()
            .map(|e| self.clients.repo(e, None))
            .collect()
    }

    /// The manifests whose referrers and digest tags go with an image: the top manifest and,
    /// for an index, each child (platform manifests carry their own attestations).
    async fn subjects(
        &self,
        item: &Item,
        decision: &Decision,
        copied: Option<&Manifest>,
    ) -> Result<Vec<Digest>> {
        let top = match (copied, &decision.source) {
            (Some(m), _) => m.clone(),
            (None, Some(h))
                if !regferry_registry::manifest::media_type::is_index(&h.media_type) =>
            {
                return Ok(vec![h.digest.clone()]);
            }
            // An index the target already holds (same digest, same bytes) is read there: a
            // target that is up to date costs the source no read.
            (None, Some(h)) => {
                let digest = h.digest.to_string();
                let held = decision
                    .target
                    .as_ref()
                    .is_some_and(|t| t.digest == h.digest);
                let from_target = if held {
                    item.dst
                        .get_manifest(&digest)
                        .await
                        .and_then(|m| super::bound(m, &h.digest))
                        .ok()
                } else {
                    None
                };
                match from_target {
                    Some(m) => m,
                    None => super::bound(item.src.get_manifest(&digest).await?, &h.digest)?,
                }
            }
            (None, None) => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        // A rebuilt index (platforms) has no referrers of its own; the source index's are
        // about content the target does not fully have. A platform picked out of an index
        // (platform) is a manifest of the source, with its own referrers.
        if !top.is_index()
            || decision
                .source
                .as_ref()
                .is_none_or(|h| h.digest == top.digest)
        {
            out.push(top.digest.clone());
        }
        if let Content::Index { manifests, .. } = top.content(&item.src_ref)? {
            out.extend(manifests.into_iter().map(|d| d.digest));
        }
        Ok(out)
    }

    /// Whether the referrers of an unchanged image are known to be in the target without
    /// reading any referrers index: the source registry has no referrers API and its
    /// `sha256-<hex>` indexes compare equal, by digest, with the target's (see
    /// [`FallbackSync::covers`]). Only for an entry's own source and target repositories.
    async fn referrers_settled(
        &self,
        entry: &SyncEntry,
        item: &Item,
        decision: &Decision,
        copied: Option<&Manifest>,
        memo: &RunMemo,
    ) -> bool {
        // The comparison HEADs every index tag of the repository: worth it when the run
        // covers the repository, not for one image or a webhook's single tag.
        if !entry.referrer_sources.is_empty()
            || entry.referrer_target.is_some()
            || !memo.whole_repositories
        {
            return false;
        }
        let Some(head) = &decision.source else {
            return false;
        };
        let Some(sync) = memo.fallback_sync(&item.src, &item.dst, &head.digest).await else {
            return false;
        };
        // With `platform`/`platforms`, the target's top is the selected manifest.
        let (top, media_type) = match copied {
            Some(m) => (&m.digest, &m.media_type),
            None => (&head.digest, &head.media_type),
        };
        sync.covers(
            top,
            regferry_registry::manifest::media_type::is_index(media_type),
        )
    }

    /// Whether the source may keep referrers for the image of `decision`, as far as this run
    /// knows without asking: `false` only when the source has no referrers API and its
    /// listing lacks the `sha256-<hex>` tag of the image and of each of its children.
    pub(super) async fn may_have_referrers(
        &self,
        entry: &SyncEntry,
        item: &Item,
        decision: &Decision,
        memo: &RunMemo,
    ) -> bool {
        if !entry.referrer_sources.is_empty() {
            return true;
        }
        let Some(tags) = memo.listed(&item.src).await else {
            return true;
        };
        // The subjects, from the manifest at hand; an index not read yet may have any.
        let subjects = match (&decision.manifest, &decision.source) {
            (Some(m), _) => self.subjects(item, decision, Some(m)).await,
            (None, Some(h))
                if !regferry_registry::manifest::media_type::is_index(&h.media_type) =>
            {
                Ok(vec![h.digest.clone()])
            }
            _ => return true,
        };
        let Ok(subjects) = subjects else { return true };
        let Some(first) = subjects.first() else {
            return false;
        };
        // Learnt once per source registry, before its first image is copied.
        if item.src.has_referrers_api(first).await.ok().flatten() != Some(false) {
            return true;
        }
        !subjects
            .iter()
            .all(|d| item.src.known_without_referrers(d, &tags))
    }

    /// Copies (or, in a dry run, lists) the referrers and digest tags of one source image
    /// into each of its targets (`items`, with their decisions and the manifests copied):
    /// the source's referrers are listed and read once for all targets. One result per
    /// target.
    pub(super) async fn extras(
        &self,
        entry: &SyncEntry,
        items: &[&Item],
        decisions: &[&Decision],
        copied: &[Option<&Manifest>],
        dry_run: bool,
        memo: &RunMemo,
    ) -> Vec<Result<(Vec<ReferrerReport>, Vec<String>)>> {
        let n = items.len();
        let mut subjects: Vec<Result<Vec<Digest>>> = Vec::with_capacity(n);
        let mut unsettled = Vec::new();
        // The targets hold one source image: its subjects are the same for all of them,
        // unless a target's copy differs (read once per distinct manifest).
        let mut known: Vec<(Option<Digest>, Vec<Digest>)> = Vec::new();
        for i in 0..n {
            let settled = entry.referrers
                && decisions[i].state == State::UpToDate
                && self
                    .referrers_settled(entry, items[i], decisions[i], copied[i], memo)
                    .await;
            if entry.referrers && !settled {
                unsettled.push(i);
            }
            if (!entry.referrers || settled) && !entry.digest_tags {
                subjects.push(Ok(Vec::new()));
                continue;
            }
            let key = copied[i].map(|m| m.digest.clone());
            if let Some((_, s)) = known.iter().find(|(k, _)| *k == key) {
                subjects.push(Ok(s.clone()));
                continue;
            }
            let s = self.subjects(items[i], decisions[i], copied[i]).await;
            if let Ok(s) = &s {
                known.push((key, s.clone()));
            }
            subjects.push(s);
        }
        let mut referrers: Vec<Result<Vec<ReferrerReport>>> =
            (0..n).map(|_| Ok(Vec::new())).collect();
        let unsettled: Vec<usize> = unsettled
            .into_iter()
            .filter(|&i| subjects[i].is_ok())
            .collect();
        if !unsettled.is_empty() {
            let copies = self
                .copy_referrers(entry, items, &unsettled, &subjects, dry_run, memo)
                .await;
            for (&i, r) in unsettled.iter().zip(copies) {
                referrers[i] = r;
            }
        }
        // The digests whose cosign-style tags go with each target: its subjects and the
        // referrers it got.
        let mut out: Vec<Result<(Vec<ReferrerReport>, Vec<Digest>)>> = subjects
            .into_iter()
            .zip(referrers)
            .map(|(s, r)| {
                let (s, r) = (s?, r?);
                let mut digests = s;
                digests.extend(r.iter().filter_map(|r| Digest::parse(&r.digest).ok()));
                Ok((r, digests))
            })
            .collect();
        let mut tags: Vec<Vec<String>> = items.iter().map(|_| Vec::new()).collect();
        if entry.digest_tags {
            let live: Vec<usize> = (0..n).filter(|&i| out[i].is_ok()).collect();
            if !live.is_empty() {
                let digests: Vec<&[Digest]> = live
                    .iter()
                    .filter_map(|&i| out[i].as_ref().ok().map(|(_, d)| d.as_slice()))
                    .collect();
                let targets: Vec<&Item> = live.iter().map(|&i| items[i]).collect();
                let copied = self.digest_tags(&targets, &digests, dry_run, memo).await;
                for (&i, r) in live.iter().zip(copied) {
                    match r {
                        Ok(t) => tags[i] = t,
                        Err(e) => out[i] = Err(e),
                    }
                }
            }
        }
        out.into_iter()
            .zip(tags)
            .map(|(r, tags)| r.map(|(referrers, _)| (referrers, tags)))
            .collect()
    }

    /// The referrers of the image into the referrer target of each item at `places`: the
    /// sources listed and each referrer read once, written to every target lacking it.
    async fn copy_referrers(
        &self,
        entry: &SyncEntry,
        items: &[&Item],
        places: &[usize],
        subjects: &[Result<Vec<Digest>>],
        dry_run: bool,
        memo: &RunMemo,
    ) -> Vec<Result<Vec<ReferrerReport>>> {
        let all_fail = |e: regferry_registry::Error| e.for_each(places.len());
        let setup = async {
            let sources = self.referrer_sources(entry, items[places[0]])?;
            // Items sharing a referrer target (`referrerTarget`) share its copy.
            let mut targets: Vec<Repo> = Vec::new();
            let mut target_of = Vec::with_capacity(places.len());
            for &i in places {
                let t = match &entry.referrer_target {
                    Some(e) => self.clients.repo(e, None)?,
                    None => items[i].dst.clone(),
                };
                match targets.iter().position(|x| x.key() == t.key()) {
                    Some(k) => target_of.push(k),
                    None => {
                        target_of.push(targets.len());
                        targets.push(t);
                    }
                }
            }
            // Without the referrers API a repository keeps referrers under `sha256-<hex>`
            // tags; with its tag list at hand, subjects without one cost no request.
            let mut known: HashMap<String, Arc<TagList>> = HashMap::new();
            for repo in &sources {
                if let Some(tags) = memo.tags(repo).await? {
                    known.insert(repo.key(), tags);
                }
            }
            // A target that cannot be listed is asked subject by subject: its failure
            // must not fail the other targets.
            for repo in &targets {
                if let Ok(Some(tags)) = memo.tags(repo).await {
                    known.insert(repo.key(), tags);
                }
            }
            Ok::<_, regferry_registry::Error>((sources, targets, target_of, known))
        };
        let (sources, targets, target_of, known) = match setup.await {
            Ok(s) => s,
            Err(e) => return all_fail(e),
        };
        let filters = entry.referrer_filters.clone();
        let filter = move |d: &regferry_registry::Descriptor| {
            ReferrerFilter::any_matches(
                &filters,
                d.artifact_type.as_deref().unwrap_or_default(),
                &d.annotations,
            )
        };
        let walk = ReferrerWalk::new(&filter, &known, dry_run, self.graph_limits())
            .scanning_layouts(entry.referrer_slow)
            .holding(&self.copy_slots);
        let mut per_target: Vec<Result<Vec<ReferrerReport>>> =
            targets.iter().map(|_| Ok(Vec::new())).collect();
        // Every place holds the same subjects (one source image).
        let subjects = match &subjects[places[0]] {
            Ok(s) => s.clone(),
            Err(_) => Vec::new(),
        };
        for s in &subjects {
            let live: Vec<usize> = (0..targets.len())
                .filter(|&k| per_target[k].is_ok())
                .collect();
            if live.is_empty() {
                break;
            }
            let repos: Vec<&Repo> = live.iter().map(|&k| &targets[k]).collect();
            let copies = self
                .transfer
                .copy_referrers_to_all(&sources, &repos, s, &walk)
                .await;
            for (&k, r) in live.iter().zip(copies) {
                match (r, &mut per_target[k]) {
                    (Ok(copies), Ok(list)) => {
                        list.extend(copies.into_iter().map(|r| ReferrerReport {
                            subject: r.subject.to_string(),
                            digest: r.digest.to_string(),
                            artifact_type: r.artifact_type,
                            source: r.source,
                        }))
                    }
                    (Err(e), slot) => *slot = Err(e),
                    (Ok(_), Err(_)) => {}
                }
            }
        }
        let shared: Vec<Result<Vec<ReferrerReport>, Arc<regferry_registry::Error>>> = per_target
            .into_iter()
            .map(|r| r.map_err(Arc::new))
            .collect();
        target_of
            .into_iter()
            .map(|k| shared[k].clone().map_err(regferry_registry::Error::Shared))
            .collect()
    }

    /// Copies the cosign-style digest tags (`sha256-<hex>.sig|.att|.sbom`) of `digests[i]`
    /// into the target of `items[i]`: each tag the source has is looked at once and read
    /// once for all targets that lack it. The tags copied (or, in a dry run, to copy) per
    /// target.
    async fn digest_tags(
        &self,
        items: &[&Item],
        digests: &[&[Digest]],
        dry_run: bool,
        memo: &RunMemo,
    ) -> Vec<Result<Vec<String>>> {
        let src = &items[0].src;
        // A source that will not list its tags has none to offer here.
        let tags = match memo.tags(src).await {
            Ok(t) => t.unwrap_or_else(|| Arc::new(TagList::new(Vec::new()))),
            Err(e) => return e.for_each(items.len()),
        };
        let mut out: Vec<Result<Vec<String>>> = items.iter().map(|_| Ok(Vec::new())).collect();
        let mut seen: Vec<&Digest> = Vec::new();
        for d in digests.iter().flat_map(|d| d.iter()) {
            if seen.contains(&d) {
                continue;
            }
            seen.push(d);
            // The bare `sha256-<hex>` is the referrers fallback index, handled with the
            // referrers.
            let prefix = format!("{}.", d.referrers_tag());
            let mut matching: Vec<&String> =
                tags.iter().filter(|t| t.starts_with(&prefix)).collect();
            matching.sort();
            for tag in matching {
                let wanting: Vec<usize> = (0..items.len())
                    .filter(|&i| out[i].is_ok() && digests[i].contains(d))
                    .collect();
                let dsts: Vec<&Repo> = wanting.iter().map(|&i| &items[i].dst).collect();
                let copied = self.copy_tag(src, &dsts, tag, dry_run).await;
                for (&i, r) in wanting.iter().zip(copied) {
                    match r {
                        Ok(true) => {
                            if let Ok(list) = &mut out[i] {
                                list.push(tag.clone());
                            }
                        }
                        Ok(false) => {}
                        Err(e) => out[i] = Err(e),
                    }
                }
            }
        }
        out
    }

    /// Copies one tag as it is into each of `dsts` that lacks it or holds another digest,
    /// reading it from `src` once; for each, whether it did (or, in a dry run, would).
    async fn copy_tag(
        &self,
        src: &Repo,
        dsts: &[&Repo],
        tag: &str,
        dry_run: bool,
    ) -> Vec<Result<bool>> {
        let all_fail = |e: regferry_registry::Error| e.for_each(dsts.len());
        if dsts.is_empty() {
            return Vec::new();
        }
        let (s, heads) = tokio::join!(
            src.head_manifest(tag),
            futures_util::future::join_all(dsts.iter().map(|d| d.head_manifest(tag)))
        );
        let s = match s {
            Ok(Some(s)) => s,
            Ok(None) => return dsts.iter().map(|_| Ok(false)).collect(),
            Err(e) => return all_fail(e),
        };
        let mut out: Vec<Result<bool>> = Vec::with_capacity(dsts.len());
        let mut lacking = Vec::new();
        for (k, h) in heads.into_iter().enumerate() {
            match h {
                // Only "not found" means missing: a refused or failing HEAD is an error.
                Err(e) => out.push(Err(e)),
                Ok(Some(h)) if h.digest == s.digest => out.push(Ok(false)),
                Ok(_) => {
                    out.push(Ok(true));
                    lacking.push(k);
                }
            }
        }
        if dry_run || lacking.is_empty() {
            return out;
        }
        let read = src.get_manifest(&s.digest.to_string()).await;
        let m = match read.and_then(|m| super::bound(m, &s.digest)) {
            Ok(m) => m,
            Err(e) => {
                for (&k, r) in lacking.iter().zip(e.for_each(lacking.len())) {
                    out[k] = r;
                }
                return out;
            }
        };
        let dests: Vec<Destination<'_>> = lacking
            .iter()
            .map(|&k| Destination {
                repo: dsts[k],
                tag: Some(tag),
                new_target: false,
            })
            .collect();
        let pushed = self
            .transfer
            .copy_manifest_to_all(src, &dests, &m, &CopyOptions::default())
            .await;
        for (&k, r) in lacking.iter().zip(pushed) {
            match r {
                Ok(_) => tracing::info!(tag, target = %dsts[k], "Copied digest tag"),
                Err(e) => out[k] = Err(e),
            }
        }
        out
    }
}
