//! The catalogue in layers: the national catalogue (`rules/`, shipped with oshirase), then a
//! prefecture's and a municipality's own folders, which a deployment keeps beside it:
//!
//! ```text
//! LAYERS/prefectures/130001/          東京都: rules (*.yaml), parameters/, tests/
//! LAYERS/municipalities/133621/       利島村: the same
//! ```
//!
//! A municipality's effective catalogue is national → its prefecture → itself
//! (`Layers::effective`): every layer's rules together, and a parameter a higher layer
//! defines taking over from its first date on (`catalogue::compile_layered`), as OpenFisca's
//! extensions layer a country's parameters. Only what can be read from the files is checked
//! here; `compile_layered` checks the rest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::catalogue::{
    compile_layered, read_source, unread_local_parameters, unreadable, yaml_files, LoadError,
    LoadErrors, RuleSet,
};
use crate::ids::LocalGovCode;
use crate::municipalities;

/// Where a part of the catalogue comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    National,
    /// A prefecture's layer, by its code (NN000 and the check digit: 東京都 130001).
    Prefecture(LocalGovCode),
    Municipality(LocalGovCode),
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::National => f.write_str("national"),
            Layer::Prefecture(code) => {
                let name = municipalities::prefecture_name(code.prefecture()).unwrap_or("?");
                write!(f, "prefecture {name} ({code})")
            }
            Layer::Municipality(code) => match municipalities::find(*code) {
                Some(m) => write!(f, "municipality {}{} ({code})", m.prefecture, m.name),
                None => write!(f, "municipality {code}"),
            },
        }
    }
}

/// One layer's files, as (file name, text): rules, parameters and rule test cases.
#[derive(Debug, Clone, Default)]
pub struct LayerSources {
    pub rules: Vec<(String, String)>,
    pub parameters: Vec<(String, String)>,
    pub tests: Vec<(String, String)>,
}

impl LayerSources {
    /// The national catalogue's folder, which must exist (`read_dir`).
    pub fn read_national(dir: &Path) -> Result<LayerSources, LoadErrors> {
        LayerSources::read(dir, true)
    }

    /// `dir/*.yaml`, `dir/parameters/*.yaml` and `dir/tests/*.yaml`; a folder missing is
    /// empty.
    pub fn read_dir(dir: &Path) -> Result<LayerSources, LoadErrors> {
        LayerSources::read(dir, false)
    }

    fn read(root: &Path, root_required: bool) -> Result<LayerSources, LoadErrors> {
        let mut errors = Vec::new();
        let mut read = |dir: &Path, required: bool, holds: &str| -> Vec<(String, String)> {
            if !required && !dir.is_dir() {
                return Vec::new();
            }
            let files = match yaml_files(dir) {
                Ok(files) => files,
                Err(e) => {
                    errors.push(unreadable(dir, format!("cannot read: {e}")));
                    return Vec::new();
                }
            };
            let mut out = Vec::new();
            for path in files {
                match read_source(&path, holds) {
                    Ok(text) => out.push((path.display().to_string(), text)),
                    Err(e) => errors.push(e),
                }
            }
            out
        };
        let sources = LayerSources {
            rules: read(root, root_required, "a rules folder holds only rule files"),
            parameters: read(
                &root.join("parameters"),
                false,
                "parameters/ holds only parameter files",
            ),
            tests: read(
                &root.join("tests"),
                false,
                "tests/ holds only test case files",
            ),
        };
        if errors.is_empty() {
            Ok(sources)
        } else {
            Err(LoadErrors(errors))
        }
    }
}

/// The national catalogue and the prefecture and municipality layers of a deployment.
#[derive(Debug, Clone)]
pub struct Layers {
    /// Where the national catalogue is (`rules`, for the one built into the binary).
    pub national_dir: PathBuf,
    pub national: LayerSources,
    /// The prefectures' and municipalities' layers, by layer (prefectures first).
    pub local: BTreeMap<Layer, LayerSources>,
}

/// The folder of the prefectures' layers, in a layers folder.
pub const PREFECTURES_DIR: &str = "prefectures";
/// The folder of the municipalities' layers, in a layers folder.
pub const MUNICIPALITIES_DIR: &str = "municipalities";

impl Layers {
    /// The national catalogue alone.
    pub fn national(national_dir: &Path, national: LayerSources) -> Layers {
        Layers {
            national_dir: national_dir.to_path_buf(),
            national,
            local: BTreeMap::new(),
        }
    }

    /// Adds the layers of folder `root` (`prefectures/CODE/`, `municipalities/CODE/`); every
    /// folder must be named by a prefecture's or a municipality's code of the bundled table,
    /// and nothing else may be in `root`. Every error at once.
    pub fn read_local(mut self, root: &Path) -> Result<Layers, LoadErrors> {
        let mut errors = Vec::new();
        let entries = std::fs::read_dir(root).map_err(|e| {
            LoadErrors(vec![unreadable(
                root,
                format!("cannot read the layers folder: {e}"),
            )])
        })?;
        let mut names: Vec<PathBuf> = Vec::new();
        for entry in entries {
            match entry {
                Ok(e) => names.push(e.path()),
                Err(e) => errors.push(unreadable(root, format!("cannot read: {e}"))),
            }
        }
        names.sort();
        for path in names {
            let kind = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !path.is_dir() || (kind != PREFECTURES_DIR && kind != MUNICIPALITIES_DIR) {
                errors.push(unreadable(
                    &path,
                    format!(
                        "a layers folder holds only {PREFECTURES_DIR}/ and {MUNICIPALITIES_DIR}/"
                    ),
                ));
                continue;
            }
            let folders = match std::fs::read_dir(&path) {
                Ok(f) => f,
                Err(e) => {
                    errors.push(unreadable(&path, format!("cannot read: {e}")));
                    continue;
                }
            };
            let mut folders: Vec<PathBuf> =
                folders.filter_map(|e| e.ok().map(|e| e.path())).collect();
            folders.sort();
            for dir in folders {
                let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let layer = match layer_of(kind, name) {
                    Ok(layer) if dir.is_dir() => layer,
                    Ok(_) => {
                        errors.push(unreadable(&dir, "not a folder".to_owned()));
                        continue;
                    }
                    Err(message) => {
                        errors.push(unreadable(&dir, message));
                        continue;
                    }
                };
                match LayerSources::read_dir(&dir) {
                    Ok(sources) => {
                        self.local.insert(layer, sources);
                    }
                    Err(e) => errors.extend(e.0),
                }
            }
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// The layers a municipality's catalogue is made of, national first: national, its
    /// prefecture's layer if there is one, its own if there is one.
    pub fn stack(&self, municipality: LocalGovCode) -> Vec<(Layer, &LayerSources)> {
        let mut stack = vec![(Layer::National, &self.national)];
        let prefecture =
            Layer::Prefecture(municipalities::prefecture_code(municipality.prefecture()));
        for layer in [prefecture, Layer::Municipality(municipality)] {
            if let Some(sources) = self.local.get(&layer) {
                stack.push((layer, sources));
            }
        }
        stack
    }

    /// The catalogue in force for `municipality`, which must be one of the bundled table.
    pub fn effective(&self, municipality: LocalGovCode) -> Result<RuleSet, LoadErrors> {
        if municipalities::find(municipality).is_none() {
            return Err(LoadErrors(vec![LoadError {
                file: self.national_dir.display().to_string(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("{municipality} is not a municipality's code"),
                hint: Some(
                    "the code of a 市区町村 of the table in engine/data/municipalities.csv".into(),
                ),
            }]));
        }
        compile_layered(&self.national_dir, &self.stack(municipality))
    }

    /// The national catalogue alone.
    pub fn national_catalogue(&self) -> Result<RuleSet, LoadErrors> {
        compile_layered(&self.national_dir, &[(Layer::National, &self.national)])
    }

    /// Every catalogue the layers make, to check them all: national, each prefecture's
    /// (national → prefecture) and each municipality's (national → prefecture → itself). A
    /// parameter a prefecture brings must be read by a rule of its own catalogue or of one of
    /// its municipalities'.
    pub fn every_catalogue(&self) -> Vec<(Layer, Result<RuleSet, LoadErrors>)> {
        let mut out = vec![(Layer::National, self.national_catalogue())];
        for layer in self.local.keys() {
            let catalogue = match layer {
                Layer::National => continue,
                Layer::Prefecture(_) => compile_layered(
                    &self.national_dir,
                    &[
                        (Layer::National, &self.national),
                        (*layer, &self.local[layer]),
                    ],
                ),
                Layer::Municipality(code) => self.effective(*code),
            };
            out.push((*layer, catalogue));
        }
        let mut unread = Vec::new();
        for (layer, catalogue) in &out {
            let (Layer::Prefecture(code), Ok(own)) = (layer, catalogue) else {
                continue;
            };
            let readers: Vec<&RuleSet> = out
                .iter()
                .filter(|(l, _)| match l {
                    Layer::Prefecture(c) => c == code,
                    Layer::Municipality(m) => m.prefecture() == code.prefecture(),
                    Layer::National => false,
                })
                .filter_map(|(_, c)| c.as_ref().ok())
                .collect();
            let errors = unread_local_parameters(
                &own.params,
                |l| l == *layer,
                |name| {
                    readers.iter().any(|c| {
                        c.rules()
                            .iter()
                            .any(|r| r.params_used.iter().any(|p| p == name))
                    })
                },
                &self.local[layer].parameters,
            );
            if !errors.is_empty() {
                unread.push((*layer, errors));
            }
        }
        for (layer, errors) in unread {
            if let Some(entry) = out.iter_mut().find(|(l, _)| *l == layer) {
                entry.1 = Err(LoadErrors(errors));
            }
        }
        out
    }
}

/// The layer a folder `name` under `kind` (prefectures or municipalities) stands for.
fn layer_of(kind: &str, name: &str) -> Result<Layer, String> {
    let code =
        LocalGovCode::parse(name).map_err(|e| format!("not a local government code: {e}"))?;
    if kind == PREFECTURES_DIR {
        if municipalities::prefecture_code(code.prefecture()) != code
            || municipalities::prefecture_name(code.prefecture()).is_none()
        {
            return Err(format!(
                "not a prefecture's code (two digits, 000 and the check digit: 東京都 is {})",
                municipalities::prefecture_code(13)
            ));
        }
        return Ok(Layer::Prefecture(code));
    }
    if municipalities::find(code).is_none() {
        return Err(format!(
            "{code} is not the code of a 市区町村 of the bundled table"
        ));
    }
    Ok(Layer::Municipality(code))
}
