use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

/// A mix with `max`, as the experiments in docs/TRAINING.md used.
const WITH_MAX: TaskMix = TaskMix {
    max_share: 0.25,
    tied_share: 0.2,
    max_problems: 1.0,
};

fn reference_output(problem: &Problem) -> String {
    format!("{}{}", problem.prompt, problem.solution_text())
}

#[test]
fn same_seed_same_problems_other_seed_other_problems() {
    assert_eq!(generate_problems(7, 50), generate_problems(7, 50));
    assert_ne!(generate_problems(7, 50), generate_problems(8, 50));
}

#[test]
fn reference_solutions_check_and_wrong_answers_do_not() {
    for problem in generate_problems(1, 500) {
        assert!(check_answer(&problem, &reference_output(&problem)));
        assert!(check_answer(&problem, &problem.solution_text()));
        let wrong: u64 = problem.answer.parse::<u64>().unwrap() + 1;
        let text = format!(
            "{}\n\n{}",
            problem.solution_text(),
            answer_line(wrong as u32)
        );
        assert!(!check_answer(&problem, &text), "last answer line counts");
        assert!(!check_answer(&problem, &problem.prompt));
    }
}

#[test]
fn check_answer_reads_digits_with_or_without_spaces_and_rejects_junk() {
    let problem = Problem {
        prompt: String::new(),
        solution_steps: vec![],
        answer: "7".into(),
    };
    assert!(check_answer(&problem, "Answer: 0 7"));
    assert!(check_answer(&problem, "x\n\nAnswer: 7\nmore"));
    assert!(!check_answer(&problem, "Answer: 7 x"));
    assert!(!check_answer(&problem, "Answer:"));
    assert!(!check_answer(&problem, "Answer: 1 7"));
}

#[test]
fn steps_follow_the_format_and_compute_the_answer() {
    let mut problems = generate_problems(3, 300);
    problems.extend(generate_problems_with(&WITH_MAX, 3, 300));
    for problem in problems {
        assert!(problem.prompt.starts_with("Problem: "));
        assert!(problem.prompt.ends_with(STEP_SEPARATOR));
        let n = problem.solution_steps.len();
        assert!(
            (MIN_OPS + 1..=MAX_OPS + 1).contains(&n),
            "MIN_OPS..=MAX_OPS operations plus the answer line"
        );
        for step in &problem.solution_steps {
            assert!(!step.contains('\n'), "a step is one line: {step:?}");
            assert!(!step.is_empty());
        }
        // The text splits back into exactly the steps.
        let text = problem.solution_text();
        let split: Vec<&str> = text.split(STEP_SEPARATOR).collect();
        assert_eq!(split, problem.solution_steps);
        // Replaying the formulas step by step yields the answer.
        let mut last = None;
        for step in &problem.solution_steps[..n - 1] {
            let words: Vec<&str> = step.split(' ').collect();
            let num = |i: usize| -> u32 {
                words[i].parse::<u32>().unwrap() * 10 + words[i + 1].parse::<u32>().unwrap()
            };
            let (total, operand, result) = (num(4), num(1), num(10));
            let (computed, expected_word) = match words[6] {
                "+" if total % 10 + operand % 10 >= 10 => (total + operand, "carry"),
                "+" => (total + operand, "add"),
                "-" if total % 10 < operand % 10 => (total - operand, "borrow"),
                "-" => (total - operand, "subtract"),
                "max" if operand > total => (operand, "raise"),
                "max" => (total, "hold"),
                other => panic!("bad sign {other}"),
            };
            assert_eq!(computed, result, "{step}");
            assert_eq!(words[0], expected_word, "the first word is the decision");
            if let Some(prev) = last {
                assert_eq!(total, prev, "each step continues from the last result");
            }
            last = Some(result);
        }
        assert_eq!(
            problem.solution_steps[n - 1],
            answer_line(last.unwrap()),
            "answer line states the last result"
        );
        assert_eq!(problem.answer, last.unwrap().to_string());
    }
}

#[test]
fn slips_are_wrong_untrained_and_followed_by_a_trained_correction() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut slips = 0;
    for i in 0..400 {
        let mix = if i % 2 == 0 {
            TaskMix::BUNDLED
        } else {
            WITH_MAX
        };
        let doc = training_text(&mut rng, 0.5, &mix);
        let prompt_end = doc.text.find(STEP_SEPARATOR).unwrap() + STEP_SEPARATOR.len();
        assert!(!doc.is_trained(0) && !doc.is_trained(prompt_end - 1));
        let second_step = doc.text[prompt_end..].split(STEP_SEPARATOR).nth(1).unwrap();
        assert!(
            doc.is_trained(prompt_end) || second_step.starts_with("Wait"),
            "the first step is trained unless it is a slip"
        );
        assert!(doc.is_trained(doc.text.len() - 1), "answer line is trained");
        if let Some(wait) = doc.text.find("Wait , ") {
            slips += 1;
            assert!(doc.is_trained(wait));
            let slip_start = doc.text[..wait - 2].rfind(STEP_SEPARATOR).unwrap() + 2;
            assert!(
                !doc.is_trained(slip_start),
                "the slip itself is not learned"
            );
            let slip = &doc.text[slip_start..wait - 2];
            let correction = &doc.text[wait + "Wait , ".len()..];
            let correction = correction.split(STEP_SEPARATOR).next().unwrap();
            assert_ne!(slip.split(' ').next(), correction.split(' ').next());
            assert_ne!(slip, correction);
        }
    }
    assert!(
        slips > 100,
        "about half of the documents carry a slip: {slips}"
    );
}

#[test]
fn slipped_step_flips_the_decision_and_misses_by_ten() {
    let op = Op {
        kind: OpKind::Add,
        operand: 58,
    };
    let slip = StepClaim::slipped(37, op).unwrap();
    assert_eq!(slip.render(), "add 5 8 : 3 7 + 5 8 = 8 5");
    assert_eq!(
        StepClaim::correct(37, op).render(),
        "carry 5 8 : 3 7 + 5 8 = 9 5"
    );
    let op = Op {
        kind: OpKind::Subtract,
        operand: 19,
    };
    assert_eq!(
        StepClaim::correct(95, op).render(),
        "borrow 1 9 : 9 5 - 1 9 = 7 6"
    );
    assert_eq!(StepClaim::slipped(95, op).unwrap().result, 86);
    // 5 - 3 = 2 without borrow; claiming one would give -8: no slip possible.
    assert_eq!(
        StepClaim::slipped(
            5,
            Op {
                kind: OpKind::Subtract,
                operand: 3
            }
        ),
        None
    );
}

#[test]
fn max_steps_keep_or_take_and_slip_to_the_other_value() {
    let op = Op {
        kind: OpKind::Max,
        operand: 42,
    };
    let cases = [
        (
            37,
            "raise 4 2 : 3 7 max 4 2 = 4 2",
            "hold 4 2 : 3 7 max 4 2 = 3 7",
        ),
        (
            48,
            "hold 4 2 : 4 8 max 4 2 = 4 8",
            "raise 4 2 : 4 8 max 4 2 = 4 2",
        ),
    ];
    for (total, right, slip) in cases {
        assert_eq!(StepClaim::correct(total, op).render(), right);
        assert_eq!(StepClaim::slipped(total, op).unwrap().render(), slip);
    }
    assert_eq!(StepClaim::correct(42, op).decision_word(), "hold");
}

/// Operations of `mix` over many chains: (additions and subtractions,
/// `max`, `max` operands in the total's decade).
fn count_ops(mix: &TaskMix, seed: u64) -> (usize, usize, usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut other, mut max, mut tied) = (0, 0, 0);
    for _ in 0..2000 {
        let chain = Chain::random(&mut rng, mix);
        for step in chain.correct_steps() {
            if step.op.kind == OpKind::Max {
                max += 1;
                tied += usize::from(step.op.operand / 10 == step.total / 10);
                assert!((1..=99).contains(&step.op.operand));
            } else {
                other += 1;
            }
        }
    }
    (other, max, tied)
}

#[test]
fn the_mix_sets_the_share_of_max_and_of_operands_in_the_totals_decade() {
    let (_, max, _) = count_ops(&TaskMix::ADD_SUBTRACT, 1);
    assert_eq!(max, 0);
    assert_eq!(TaskMix::BUNDLED.out_of_range(), None);
    let bunched_too_far = TaskMix {
        max_problems: 1.2,
        ..TaskMix::BUNDLED
    };
    assert_eq!(bunched_too_far.out_of_range(), Some(("max_problems", 1.2)));
    let mix = TaskMix {
        max_share: 0.25,
        tied_share: 0.2,
        max_problems: 1.0,
    };
    let (other, max, tied) = count_ops(&mix, 2);
    let share = max as f64 / (max + other) as f64;
    assert!((0.23..0.27).contains(&share), "max share {share}");
    let tied = tied as f64 / max as f64;
    assert!((0.17..0.23).contains(&tied), "tied share {tied}");
}

#[test]
fn max_problems_bunches_max_into_that_share_of_the_problems() {
    let mix = TaskMix {
        max_share: 0.5,
        tied_share: 0.2,
        max_problems: 0.3,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let chains: Vec<Chain> = (0..3000).map(|_| Chain::random(&mut rng, &mix)).collect();
    let is_max = |op: &Op| op.kind == OpKind::Max;
    let with_max: Vec<&Chain> = chains.iter().filter(|c| c.ops.iter().any(is_max)).collect();
    let problems = with_max.len() as f64 / chains.len() as f64;
    // 0.3 of the problems, less those that drew no `max` by chance.
    assert!((0.24..0.31).contains(&problems), "{problems}");
    let ops: Vec<&Op> = with_max.iter().flat_map(|c| c.ops.iter()).collect();
    let share = ops.iter().filter(|op| is_max(op)).count() as f64 / ops.len() as f64;
    assert!(share > 0.5, "max is dense where it occurs: {share}");
}

#[test]
fn without_max_the_mix_draws_what_the_add_subtract_task_always_drew() {
    // The first prompts of seed 2026 as the add/subtract task wrote them
    // before `max` existed (benches/task_prompts.jsonl up to the eleventh
    // session); a model trained on that task (`slm-base`) must keep seeing
    // the same problems.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/task/testdata/add_subtract_prompts_seed2026.jsonl"
    );
    let file = std::fs::read_to_string(path).unwrap();
    let saved: Vec<String> = file
        .lines()
        .take(50)
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["prompt"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let drawn: Vec<String> = generate_problems_with(&TaskMix::ADD_SUBTRACT, 2026, 50)
        .into_iter()
        .map(|p| p.prompt)
        .collect();
    assert_eq!(drawn, saved);
}

#[test]
fn tokenizer_round_trips_every_generated_text_without_unknowns() {
    for mix in [TaskMix::BUNDLED, WITH_MAX] {
        let tokenizer = build_task_tokenizer_for(&mix).unwrap();
        let unk = token_id(&tokenizer, UNK_TOKEN).unwrap();
        assert!(
            tokenizer.get_vocab_size(true) < 80,
            "word-level vocabulary stays tiny"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let mut texts: Vec<String> = (0..300)
            .map(|_| training_text(&mut rng, 0.5, &mix).text)
            .collect();
        texts.extend(
            generate_problems_with(&mix, 5, 300)
                .iter()
                .map(reference_output),
        );
        for text in texts {
            let enc = tokenizer.encode(text.as_str(), false).unwrap();
            assert!(!enc.get_ids().contains(&unk), "unknown token in {text:?}");
            let back = tokenizer.decode(enc.get_ids(), false).unwrap();
            assert_eq!(back, text);
        }
    }
}

#[test]
fn a_prompt_tokenizes_to_a_prefix_of_its_continuation() {
    let tokenizer = build_task_tokenizer().unwrap();
    let unk = token_id(&tokenizer, UNK_TOKEN).unwrap();
    for problem in generate_problems(12, 200) {
        let prompt = tokenizer.encode(problem.prompt.as_str(), false).unwrap();
        let full = tokenizer
            .encode(reference_output(&problem).as_str(), false)
            .unwrap();
        assert!(
            !prompt.get_ids().contains(&unk),
            "{:?}",
            prompt.get_tokens()
        );
        assert!(full.get_ids().starts_with(prompt.get_ids()));
        // The same holds at every step boundary, where the router cuts.
        let mut text = problem.prompt.clone();
        for step in &problem.solution_steps {
            text.push_str(step);
            text.push_str(STEP_SEPARATOR);
            let ids = tokenizer.encode(text.as_str(), false).unwrap();
            let longer = format!("{text}x");
            let longer = tokenizer.encode(longer.as_str(), false).unwrap();
            assert!(longer.get_ids().starts_with(ids.get_ids()), "{text:?}");
        }
    }
}

#[test]
fn tokenizer_is_deterministic_and_decision_words_are_single_tokens() {
    let a = build_task_tokenizer().unwrap();
    let b = build_task_tokenizer().unwrap();
    assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
    assert_eq!(token_id(&a, EOS_TOKEN).unwrap(), 0);
    assert_eq!(a.get_vocab_size(true), 45, "the bundled pair's vocabulary");
    let with_max = build_task_tokenizer_for(&WITH_MAX).unwrap();
    assert_eq!(with_max.get_vocab(true), a.get_vocab(true));
    // Without `max`: no ` max`, and no `hold` or `raise` at a step start
    // or after `Wait ,`.
    let add_subtract = build_task_tokenizer_for(&TaskMix::ADD_SUBTRACT).unwrap();
    assert_eq!(add_subtract.get_vocab_size(true), 40);
    let decision_words = [
        (&a, "add"),
        (&a, "carry"),
        (&a, "subtract"),
        (&a, "borrow"),
        (&a, "Wait"),
        (&with_max, "hold"),
        (&with_max, "raise"),
    ];
    for (tokenizer, word) in decision_words {
        let enc = tokenizer
            .encode(format!("x\n\n{word} 1").as_str(), false)
            .unwrap();
        assert!(
            enc.get_tokens().iter().any(|t| t == word),
            "{word}: {:?}",
            enc.get_tokens()
        );
    }
}

#[test]
fn saved_tokenizer_reloads_and_chat_template_renders_the_prompt() {
    let dir = std::env::temp_dir().join(format!("glimp-task-tok-{}", std::process::id()));
    let tokenizer = build_task_tokenizer().unwrap();
    write_tokenizer_files(&dir, &tokenizer, 256).unwrap();
    let reloaded = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let problem = &generate_problems(2, 1)[0];
    let text = reference_output(problem);
    assert_eq!(
        reloaded.encode(text.as_str(), false).unwrap().get_ids(),
        tokenizer.encode(text.as_str(), false).unwrap().get_ids()
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    let template = config["chat_template"].as_str().unwrap();
    let env = minijinja::Environment::new();
    let user = problem.prompt.trim_end();
    let rendered = env
        .render_str(
            template,
            minijinja::context! { messages => vec![minijinja::context!{ role => "user", content => user }], add_generation_prompt => true },
        )
        .unwrap();
    assert_eq!(rendered, problem.prompt);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn prompts_file_has_one_json_prompt_per_line() {
    let path = std::env::temp_dir().join(format!("glimp-prompts-{}.jsonl", std::process::id()));
    write_prompts_jsonl(&path, 4, 20).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let prompts: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = generate_problems(4, 20)
        .into_iter()
        .map(|p| p.prompt)
        .collect();
    assert_eq!(prompts, expected);
    std::fs::remove_file(&path).ok();
}

/// README's example requests must be prompts the bundled models were
/// trained on: anything else gets nonsense back, which is what a new user
/// would see first.
#[test]
fn readme_example_prompts_are_in_the_task_format() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let tokenizer = build_task_tokenizer().unwrap();
    let unk = token_id(&tokenizer, UNK_TOKEN).unwrap();
    let prompts: Vec<String> = readme
        .lines()
        .filter_map(|line| line.trim().strip_prefix("\"prompt\": "))
        .map(|value| {
            let value = value.trim_end_matches(',');
            serde_json::from_str(value).unwrap_or_else(|e| panic!("{value}: {e}"))
        })
        .collect();
    assert!(!prompts.is_empty(), "README shows an example prompt");
    for prompt in prompts {
        assert!(prompt.starts_with("Problem: start with "), "{prompt:?}");
        assert!(
            prompt.ends_with(" . What is the result ?\n\n"),
            "{prompt:?}"
        );
        let enc = tokenizer.encode(prompt.as_str(), false).unwrap();
        assert!(!enc.get_ids().contains(&unk), "unknown token in {prompt:?}");
    }
}
