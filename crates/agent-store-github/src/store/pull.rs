//! A release asset pulled: downloaded into a private temp directory while
//! hashing, checked against the published digest and signature, extracted,
//! and installed through the one install path.

use super::*;

impl Inner {
    /// Streams the asset into `dest` (a new file in a private temp dir),
    /// hashing as it goes. Returns the digest and size.
    pub(super) async fn download(
        &self,
        release: &Release,
        asset: &Asset,
        dest: &Path,
    ) -> Result<(Sha256Digest, u64), GithubError> {
        let url = self.api.url(&format!(
            "{}/releases/assets/{}",
            repo_path(release),
            asset.id
        ));
        let resp = self
            .api
            .get(&url, "application/octet-stream", &HeaderMap::new())
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(GithubError::Missing(format!(
                "asset {} ({url})",
                asset.name
            )));
        }
        if !status.is_success() {
            let body = read_small(resp, &url, self.api.timeout, 64 * 1024)
                .await
                .unwrap_or_default();
            return Err(self.api.status_error(&url, status, &body));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .await
            .map_err(|e| GithubError::io(format!("create {}", dest.display()), e))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        // The stall timer counts bytes, not frames (transport::BodyReader).
        let mut body = BodyReader::new(resp.into_body(), self.api.timeout);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = body
                .read(&mut buf)
                .await
                .map_err(|e| GithubError::Unreachable {
                    url: url.clone(),
                    message: if e.kind() == std::io::ErrorKind::TimedOut {
                        format!("download stalled for {:?}", self.api.timeout)
                    } else {
                        "download interrupted".to_owned()
                    },
                    source: Some(Box::new(e)),
                })?;
            if n == 0 {
                break;
            }
            let data = &buf[..n];
            size += n as u64;
            if size > self.max_download {
                return Err(GithubError::Checksum {
                    what: asset.name.clone(),
                    message: format!("download exceeds the {} byte cap", self.max_download),
                });
            }
            hasher.update(data);
            file.write_all(data)
                .await
                .map_err(|e| GithubError::io(format!("write {}", dest.display()), e))?;
        }
        file.flush()
            .await
            .map_err(|e| GithubError::io(format!("write {}", dest.display()), e))?;
        Ok((Sha256Digest(hasher.finalize().into()), size))
    }

    pub(super) async fn pull(
        &self,
        agent: &AgentRef,
        platform: &Platform,
        installer: &Installer,
    ) -> Result<Installed, StoreError> {
        let version = agent
            .concrete_version()
            .ok_or_else(|| RefError::NotConcrete(agent.identifier()))?
            .clone();
        refuse_kind(agent)?;
        let (owner, repo) = repo_of(agent);
        let (tag, release) = self.release(&owner, &repo, &version).await?;
        let asset = Inner::pick_asset(
            agent,
            &version,
            platform,
            &format!("{owner}/{repo}@{tag}"),
            &release,
        )?;
        if u64::try_from(asset.size).unwrap_or(0) > self.max_download {
            return Err(GithubError::Checksum {
                what: asset.name.clone(),
                message: format!(
                    "asset is {} bytes, over the {} byte cap",
                    asset.size, self.max_download
                ),
            }
            .into());
        }
        let published = self.published_digest(&release, asset).await?;
        let signature = self.signature(&release, asset).await?;

        let tmp_root = self.cache_dir.join("tmp");
        create_private_dir_all(&tmp_root)
            .map_err(|e| GithubError::io(format!("create {}", tmp_root.display()), e))?;
        remove_stale_temp_dirs(&tmp_root);
        let tmp = tempfile::Builder::new()
            .prefix("pull-")
            .tempdir_in(&tmp_root)
            .map_err(|e| {
                GithubError::io(format!("create a temp dir in {}", tmp_root.display()), e)
            })?;
        let archive = tmp.path().join("archive.tar.gz");
        let (digest, size) = self.download(&release, asset, &archive).await?;

        if let Ok(claimed) = u64::try_from(asset.size)
            && claimed != size
        {
            return Err(GithubError::Checksum {
                what: asset.name.clone(),
                message: format!("GitHub lists {claimed} bytes, {size} were received"),
            }
            .into());
        }
        match &published {
            Some((want, from)) if *want != digest => {
                return Err(GithubError::Checksum {
                    what: asset.name.clone(),
                    message: format!("sha256 {digest} does not match {want} published in {from}"),
                }
                .into());
            }
            Some((_, from)) => {
                tracing::debug!(asset = %asset.name, %digest, from = %from, "sha256 verified");
            }
            None if self.require_checksum => {
                return Err(GithubError::Checksum {
                    what: asset.name.clone(),
                    message: "the release publishes no sha256 for it (no asset digest, no SHA256SUMS/checksums.txt entry) and a checksum is required".to_owned(),
                }
                .into());
            }
            None => tracing::warn!(
                asset = %asset.name,
                release = %format!("{owner}/{repo}@{tag}"),
                %digest,
                "installing UNVERIFIED: the release publishes no sha256 for this asset (no asset digest, no SHA256SUMS/checksums.txt entry)"
            ),
        }

        // The signature is over the tarball: verify it before anything is
        // extracted from it; the installer records the signer and applies
        // the publisher's require-signature to what it is handed.
        let verified_signer = {
            let policy = installer.trust().clone();
            let (agent, platform, archive) = (agent.clone(), platform.clone(), archive.clone());
            tokio::task::spawn_blocking(move || {
                agent_store::trust::verify_detached(
                    &policy,
                    &agent,
                    &platform,
                    &archive,
                    signature.as_deref(),
                )
            })
            .await
            .map_err(|e| GithubError::io("signature check task", std::io::Error::other(e)))??
        };

        let out_dir = tmp.path().join("x");
        create_private_dir_all(&out_dir)
            .map_err(|e| GithubError::io(format!("create {}", out_dir.display()), e))?;
        let binary = agent.kind().artifact_name(agent.name());
        let limits = self.limits;
        let asset_name = asset.name.clone();
        let bin = tokio::task::spawn_blocking(move || {
            extract_binary(&archive, &asset_name, &out_dir, &binary, limits)
        })
        .await
        .map_err(|e| GithubError::io("extraction task", std::io::Error::other(e)))??;

        let source = format!("github:{owner}/{repo}@{tag}");
        let expected = Expected {
            platform: Some(platform.clone()),
            verified_signer,
            ..Expected::default()
        };
        let installed = installer
            .install_file(agent, &source, &expected, &bin)
            .await?;
        drop(tmp);
        Ok(installed)
    }
}

/// Temp dirs of pulls killed before they could clean up (a day old or more).
fn remove_stale_temp_dirs(tmp_root: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp_root) else {
        return;
    };
    let day = Duration::from_secs(24 * 3600);
    for e in entries.flatten() {
        let name = e.file_name();
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > day));
        if stale && name.to_string_lossy().starts_with("pull-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
