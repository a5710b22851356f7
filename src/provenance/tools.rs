//! Which tool inputs carry code the model wrote, and which field holds it.
//!
//! Only tools that write files count: their inputs are what ends up in a repository. A tool that
//! reads, searches or runs a command carries no output of its own (except Codex's `shell` running
//! `apply_patch`). Names are the ones the real clients declare (docs/clients.md): Claude Code,
//! Anthropic's text editor tool, Codex, Gemini CLI and opencode.

use serde_json::Value;

/// The code inside a tool's (parsed JSON) input, one string per written piece.
pub(super) fn code_from_input(tool: &str, input: &Value) -> Vec<String> {
    let field = |name: &str| input.get(name).and_then(Value::as_str).map(str::to_owned);
    let mut out = Vec::new();
    match tool {
        // Claude Code; Gemini CLI's write_file; opencode's write.
        "Write" | "write_file" | "write" => out.extend(field("content")),
        // Claude Code's Edit; Gemini CLI's replace; opencode's edit (camelCase).
        "Edit" | "replace" | "edit" => {
            out.extend(field("new_string").or_else(|| field("newString")));
        }
        "MultiEdit" | "multiedit" => {
            let edits = input.get("edits").and_then(Value::as_array);
            for e in edits.into_iter().flatten() {
                let new = e.get("new_string").or_else(|| e.get("newString"));
                out.extend(new.and_then(Value::as_str).map(str::to_owned));
            }
        }
        "NotebookEdit" => out.extend(field("new_source")),
        // Anthropic's text editor tool: `create` has file_text, `str_replace`/`insert` new_str.
        "str_replace_based_edit_tool" | "str_replace_editor" => {
            out.extend(field("file_text"));
            out.extend(field("new_str"));
        }
        // Codex as a function tool: {"input": "*** Begin Patch …"}; opencode: {"patchText": …}.
        "apply_patch" | "patch" => {
            let patch = field("input")
                .or_else(|| field("patch"))
                .or_else(|| field("patchText"));
            out.extend(patch.as_deref().map(added_lines));
        }
        // Codex's shell running `apply_patch` (argv form, or a here-document in `bash -lc`).
        "shell" | "local_shell" | "container.exec" => {
            let argv = input.get("command").and_then(Value::as_array);
            for arg in argv.into_iter().flatten().filter_map(Value::as_str) {
                if arg.contains("*** Begin Patch") {
                    out.push(added_lines(arg));
                }
            }
        }
        _ => {}
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The code inside a custom (free-form) tool's raw input: Codex's `apply_patch` grammar tool.
pub(super) fn code_from_raw(tool: &str, input: &str) -> Option<String> {
    match tool {
        "apply_patch" => Some(added_lines(input)).filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// The lines a patch adds, without their `+`: only those are the model's new code. Works for
/// Codex's `*** Begin Patch` format (added files and hunks alike) and for unified diffs, whose
/// `+++ path` header after a `--- path` line is not content.
pub fn added_lines(patch: &str) -> String {
    let mut out = String::new();
    let mut previous_was_old_header = false;
    for line in patch.lines() {
        let header = previous_was_old_header && line.starts_with("+++ ");
        previous_was_old_header = line.starts_with("--- ");
        if let Some(added) = line.strip_prefix('+').filter(|_| !header) {
            out.push_str(added);
            out.push('\n');
        }
    }
    out
}
